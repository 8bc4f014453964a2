package cacheserver_test

import (
	"testing"

	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
)

func TestMain(m *testing.M) { testserver.Main(m) }
