{{/* Names, labels and images. Helpers are namespaced per component: order-pipeline.<component>.* */}}

{{- define "order-pipeline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or the release name alone when it already contains the chart name. */}}
{{- define "order-pipeline.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "order-pipeline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The selector subset: stable for the life of a release (selectors are immutable). */}}
{{- define "order-pipeline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "order-pipeline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "order-pipeline.labels" -}}
helm.sh/chart: {{ include "order-pipeline.chart" . }}
{{ include "order-pipeline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: order-pipeline
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* "repository:tag", the tag defaulting to the chart's appVersion. Call with (dict "image" .. "root" $). */}}
{{- define "order-pipeline.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* --- operator --- */}}

{{- define "order-pipeline.operator.fullname" -}}
{{- printf "%s-operator" (include "order-pipeline.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "order-pipeline.operator.selectorLabels" -}}
{{ include "order-pipeline.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "order-pipeline.operator.labels" -}}
{{ include "order-pipeline.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "order-pipeline.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "order-pipeline.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* --- pipelines --- */}}

{{- define "order-pipeline.pipeline.labels" -}}
{{ include "order-pipeline.labels" . }}
app.kubernetes.io/component: pipeline
{{- end }}

{{/* --- monitoring --- */}}

{{- define "order-pipeline.monitoring.labels" -}}
{{ include "order-pipeline.labels" . }}
app.kubernetes.io/component: monitoring
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* --- helm test --- */}}

{{- define "order-pipeline.test.labels" -}}
{{ include "order-pipeline.labels" . }}
app.kubernetes.io/component: test
{{- end }}

{{/* Name of the API Secret the chart generates for a pipeline, or "" when it generates none
(generateApiSecret false, or the spec names its own api.secretRef). Call with a pipeline item. */}}
{{- define "order-pipeline.pipeline.generatedSecretName" -}}
{{- $generate := true }}
{{- if hasKey . "generateApiSecret" }}{{ $generate = .generateApiSecret }}{{ end }}
{{- if and $generate (not (dig "api" "secretRef" "name" "" (default (dict) .spec))) }}
{{- printf "%s-api-secrets" .name }}
{{- end }}
{{- end }}
