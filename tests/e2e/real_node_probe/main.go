// Command node-probe is the one binary in the real-node tests' image (no shell, no libc).
//
//	node-probe serve [port]   HTTP: /healthz 200, /status/<code> that code, else a greeting;
//	                          every request is logged to stdout (for `kubectl logs`)
//	node-probe apiserver      as the pod's ServiceAccount, GET /version and a pods list from
//	                          the `kubernetes` Service, TLS verified against the mounted ca.crt;
//	                          prints one JSON line per request
//	node-probe echo words...  print the words (for `kubectl exec`)
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount/"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: node-probe serve [port] | apiserver | echo words...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		port := "8080"
		if len(os.Args) > 2 {
			port = os.Args[2]
		}
		serve(port)
	case "apiserver":
		if err := checkAPIServer(); err != nil {
			fmt.Fprintln(os.Stderr, "apiserver check failed:", err)
			os.Exit(1)
		}
	case "echo":
		fmt.Println(strings.Join(os.Args[2:], " "))
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}

func serve(port string) {
	hostname, _ := os.Hostname()
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("request %s %s from %s\n", r.Method, r.URL.Path, r.RemoteAddr)
		switch {
		case r.URL.Path == "/healthz":
			fmt.Fprintln(w, "ok")
		case strings.HasPrefix(r.URL.Path, "/status/"):
			code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
			if err != nil || code < 200 || code > 599 {
				code = http.StatusBadRequest
			}
			w.WriteHeader(code)
		default:
			fmt.Fprintf(w, "hello from %s path=%s\n", hostname, r.URL.Path)
		}
	})
	listener, err := net.Listen("tcp", ":"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	fmt.Println("listening on", listener.Addr())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		os.Exit(0)
	}()
	server := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}

func checkAPIServer() error {
	token, err := os.ReadFile(serviceAccountDir + "token")
	if err != nil {
		return err
	}
	namespace, err := os.ReadFile(serviceAccountDir + "namespace")
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(serviceAccountDir + "ca.crt")
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("no certificate in %sca.crt", serviceAccountDir)
	}
	host := net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"))
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
	}
	for _, path := range []string{"/version", "/api/v1/namespaces/" + string(namespace) + "/pods"} {
		request, err := http.NewRequest(http.MethodGet, "https://"+host+path, nil)
		if err != nil {
			return err
		}
		request.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		response, err := client.Do(request)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(io.LimitReader(response.Body, 4096))
		response.Body.Close()
		if err != nil {
			return err
		}
		line, _ := json.Marshal(map[string]any{
			"url": "https://" + host + path, "status": response.StatusCode, "body": string(body),
		})
		fmt.Println(string(line))
	}
	return nil
}
