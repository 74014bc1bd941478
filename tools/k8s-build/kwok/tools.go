//go:build tools

// Package tools makes the kwok command part of this module's build list.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
