// Command kube-scheduler is Kubernetes' own kube-scheduler (k8s.io/kubernetes/cmd/kube-scheduler),
// built from the k8s.io/kubernetes Go module for the local cluster
// (hack/local-cluster/build.sh stamps the version through -ldflags -X).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	os.Exit(cli.Run(app.NewSchedulerCommand()))
}
