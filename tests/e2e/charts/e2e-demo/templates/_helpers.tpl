{{- define "e2e-demo.labels" -}}
app.kubernetes.io/name: e2e-demo
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* A container that passes the `restricted` Pod Security level. */}}
{{- define "e2e-demo.securityContext" -}}
allowPrivilegeEscalation: false
runAsNonRoot: true
runAsUser: 10001
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}
