// Command manager runs the DiskCache operator: the DiskCache controller with
// metrics, health probes and leader election.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/controllers"
	"github.com/diskcache-operator/diskcache-operator/controllers/maintenance"
)

// version is set at build time (-ldflags -X main.version=…); it names the
// default cacheserver image, which is the operator's own image.
var version = "v0.1.0"

// imageRepository holds both binaries (/manager and /cacheserver).
const imageRepository = "ghcr.io/diskcache-operator/diskcache-operator"

// defaultLeaderElectionID is the name of the leader election Lease unless
// --leader-election-id says otherwise: the one every install used before the
// flag existed, so an upgraded operator takes over the same Lease.
const defaultLeaderElectionID = "diskcache-operator.cache.diskcache.dev"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

func defaultImage() string {
	if img := os.Getenv("CACHESERVER_IMAGE"); img != "" {
		return img
	}
	return imageRepository + ":" + version
}

func run() error {
	var (
		metricsAddr, probeAddr string
		metricsSecure          bool
		metricsCertDir         string
		leaderElect            bool
		leaderElectionNS       string
		leaderElectionID       string
		image                  string
		watchNamespaces        string
		clusterDomain          string
		showVersion            bool
		maintParallelism       int
		maintShardTimeout      time.Duration
		operatorNamespace      string
		operatorPodLabels      string
		pullSecrets            string
		maxReconciles          int
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "address of the Prometheus /metrics endpoint (0 disables it)")
	flag.BoolVar(&metricsSecure, "metrics-secure", true, "serve /metrics over HTTPS to callers the API server authenticates and authorizes (get on the non-resource URL /metrics); false: plain HTTP to anyone")
	flag.StringVar(&metricsCertDir, "metrics-cert-dir", "", "directory with tls.crt and tls.key for the secure /metrics (reloaded when they change; default: a self-signed certificate made at start)")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	flag.BoolVar(&leaderElect, "leader-elect", false, "elect a leader so only one replica reconciles (the deployment turns it on)")
	flag.StringVar(&leaderElectionNS, "leader-election-namespace", "", "namespace of the leader election Lease (default: the pod's namespace)")
	flag.StringVar(&leaderElectionID, "leader-election-id", defaultLeaderElectionID, "name of the leader election Lease: operators that must not share a leader (two installs in one namespace) need different ones")
	flag.StringVar(&image, "cacheserver-image", defaultImage(), "cacheserver image for DiskCaches without spec.image (env CACHESERVER_IMAGE)")
	flag.StringVar(&pullSecrets, "cacheserver-image-pull-secrets", "", "comma-separated image pull Secrets of the cache pods of DiskCaches without spec.imagePullSecrets (each must exist in the DiskCache's namespace)")
	flag.StringVar(&watchNamespaces, "watch-namespaces", "", "comma-separated namespaces to reconcile DiskCaches in (default: all)")
	flag.StringVar(&clusterDomain, "cluster-domain", controllers.DefaultClusterDomain, "DNS domain of the cluster, in the shard URLs the operator announces to the cache servers")
	flag.BoolVar(&showVersion, "version", false, "print the version and exit")
	flag.StringVar(&operatorNamespace, "operator-namespace", podNamespace(), "namespace of the operator's pods, admitted by the NetworkPolicies of spec.networkPolicy (default: the pod's namespace; empty outside a cluster)")
	flag.StringVar(&operatorPodLabels, "operator-pod-labels", labels.FormatLabels(controllers.DefaultOperatorPodLabels), "labels of the operator's pods, admitted by the NetworkPolicies of spec.networkPolicy")
	flag.IntVar(&maintParallelism, "maintenance-parallelism", maintenance.DefaultParallelism, "shards of one DiskCache a maintenance run works on at once")
	flag.DurationVar(&maintShardTimeout, "maintenance-shard-timeout", maintenance.DefaultShardTimeout, "bound on a maintenance run's calls to one shard")
	flag.IntVar(&maxReconciles, "max-concurrent-reconciles", controllers.DefaultMaxConcurrentReconciles, "DiskCaches reconciled at once (a maintenance run holds up only its own DiskCache's reconcile)")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	if showVersion {
		fmt.Println(version)
		return nil
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(cachev1alpha1.AddToScheme(scheme))

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	cacheOpts := controllers.CacheOptions()
	for _, ns := range strings.Split(watchNamespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			if cacheOpts.DefaultNamespaces == nil {
				cacheOpts.DefaultNamespaces = map[string]cache.Config{}
			}
			cacheOpts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsOptions(metricsAddr, metricsSecure, metricsCertDir),
		HealthProbeBindAddress:        probeAddr,
		LeaderElection:                leaderElect,
		LeaderElectionID:              leaderElectionID,
		LeaderElectionNamespace:       leaderElectionNS,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         cacheOpts,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	maintMetrics, err := maintenance.NewMetrics(ctrlmetrics.Registry)
	if err != nil {
		return fmt.Errorf("register maintenance metrics: %w", err)
	}
	rebalanceMetrics, err := controllers.NewRebalanceMetrics(ctrlmetrics.Registry)
	if err != nil {
		return fmt.Errorf("register rebalance metrics: %w", err)
	}
	r := &controllers.DiskCacheReconciler{
		Metrics:      rebalanceMetrics,
		Client:       mgr.GetClient(),
		APIReader:    mgr.GetAPIReader(),
		Scheme:       mgr.GetScheme(),
		Recorder:     mgr.GetEventRecorder(controllers.ManagerName),
		DefaultImage: image,
		Maintenance: &maintenance.Scheduler{
			Metrics: maintMetrics,
			Runner:  &maintenance.Runner{Parallelism: maintParallelism, ShardTimeout: maintShardTimeout},
		},
	}
	r.ClusterDomain = clusterDomain
	for _, name := range strings.Split(pullSecrets, ",") {
		if name = strings.TrimSpace(name); name != "" {
			r.DefaultImagePullSecrets = append(r.DefaultImagePullSecrets, corev1.LocalObjectReference{Name: name})
		}
	}
	r.MaxConcurrentReconciles = maxReconciles
	r.OperatorNamespace = operatorNamespace
	if r.OperatorPodLabels, err = labels.ConvertSelectorToLabelsMap(operatorPodLabels); err != nil {
		return fmt.Errorf("--operator-pod-labels: %w", err)
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up controller: %w", err)
	}
	// The built-in autoscaler (spec.autoscaling), beside the reconciler.
	if err := mgr.Add(&controllers.Autoscaler{
		Client:     mgr.GetClient(),
		APIReader:  mgr.GetAPIReader(),
		Recorder:   mgr.GetEventRecorder(controllers.ManagerName),
		Reconciler: r,
	}); err != nil {
		return fmt.Errorf("set up autoscaler: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	log.Info("starting manager", "version", version, "cacheserverImage", image, "leaderElection", leaderElect, "leaderElectionID", leaderElectionID)
	return mgr.Start(ctrl.SetupSignalHandler())
}

// podNamespace is the namespace of the pod the operator runs in, from its
// service account; empty outside a cluster.
func podNamespace() string {
	b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// metricsOptions serves /metrics as kubebuilder's scaffold does: when
// secure, over HTTPS and only to callers that the API server
// authenticates (TokenReview) and authorizes for get on /metrics
// (SubjectAccessReview), since the operator's metrics name every
// DiskCache in the cluster.
func metricsOptions(addr string, secure bool, certDir string) metricsserver.Options {
	o := metricsserver.Options{BindAddress: addr, SecureServing: secure}
	if secure {
		o.FilterProvider = filters.WithAuthenticationAndAuthorization
		o.CertDir = certDir
	}
	return o
}
