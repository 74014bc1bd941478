// Command coredns is CoreDNS with only the plugins the test cluster's DNS needs. Upstream's
// main links all ~60 plugins (cloud DNS providers, etcd, ...): several times the build time
// and binary size for nothing the cluster uses. Upstream documents this way of building.
package main

import (
	"slices"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// linkedPlugins must name exactly the plugins imported above.
var linkedPlugins = []string{"bind", "errors", "kubernetes", "log", "ready"}

func init() {
	// Keep upstream's order (it decides which plugin sees a query first), minus what is not linked.
	dnsserver.Directives = slices.DeleteFunc(dnsserver.Directives, func(directive string) bool {
		return !slices.Contains(linkedPlugins, directive)
	})
}

func main() {
	coremain.Run()
}
