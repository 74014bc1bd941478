//go:build tools

// Package tools makes the etcd server command part of this module's build list.
package tools

import _ "go.etcd.io/etcd/server/v3"
