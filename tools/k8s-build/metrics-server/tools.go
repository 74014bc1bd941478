//go:build tools

// Package tools makes the metrics-server command part of this module's build list.
package tools

import _ "sigs.k8s.io/metrics-server/cmd/metrics-server"
