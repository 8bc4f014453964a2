// Command etcd is etcd's own server main, built from the go.etcd.io/etcd
// Go module so envtest needs no prebuilt download.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
