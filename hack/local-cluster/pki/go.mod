module github.com/diskcache-operator/diskcache-operator/hack/local-cluster/pki

go 1.26.0
