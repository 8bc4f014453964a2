// Command kube-proxy is Kubernetes' own kube-proxy (k8s.io/kubernetes/cmd/kube-proxy),
// built from the k8s.io/kubernetes Go module for the local cluster
// (hack/local-cluster/build.sh stamps the version through -ldflags -X).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	os.Exit(cli.Run(app.NewProxyCommand()))
}
