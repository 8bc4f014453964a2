package autoscale

import (
	"fmt"
	"strings"
	"time"
)

// Reading is one shard's figures (GET /v1/usage) as read at one time.
type Reading struct {
	At time.Time
	// Started identifies the server process: counters of another process
	// are not comparable.
	Started string
	// Served and Evicted are counters since Started.
	Served, Evicted int64
	// DiskBytes is the shard's whole disk use; SizeLimit its size_limit.
	DiskBytes, SizeLimit int64
}

// Averages turns readings into the per-shard averages Decide holds to
// targets: fill from the current readings, rates from the change since the
// previous reading of the same process. A figure is left out unless every
// one of the shards 0..shards-1 gives it (an average over part of the
// shards would be the figure of another cache); missing says, per figure
// left out, why.
func Averages(prev, cur map[int]Reading, shards int) (avg map[string]float64, missing map[string]string) {
	avg, missing = map[string]float64{}, map[string]string{}
	if shards <= 0 {
		return avg, missing
	}
	var fill, served, evicted float64
	var noFill, noRate []string
	for i := range shards {
		c, ok := cur[i]
		if !ok {
			noFill = append(noFill, fmt.Sprint(i))
			noRate = append(noRate, fmt.Sprint(i))
			continue
		}
		if c.SizeLimit > 0 {
			fill += float64(c.DiskBytes) / float64(c.SizeLimit)
		} else {
			noFill = append(noFill, fmt.Sprint(i))
		}
		p, ok := prev[i]
		dt := c.At.Sub(p.At).Seconds()
		if !ok || p.Started != c.Started || c.Served < p.Served || c.Evicted < p.Evicted || dt <= 0 {
			noRate = append(noRate, fmt.Sprint(i))
			continue
		}
		served += float64(c.Served-p.Served) / dt
		evicted += float64(c.Evicted-p.Evicted) / dt
	}
	n := float64(shards)
	if len(noFill) == 0 {
		avg[Fill] = fill / n
	} else {
		missing[Fill] = "no figures from shards " + strings.Join(noFill, ",")
	}
	if len(noRate) == 0 {
		avg[RequestRate] = served / n
		avg[EvictionRate] = evicted / n
	} else {
		why := "no two readings of one server process from shards " + strings.Join(noRate, ",")
		missing[RequestRate], missing[EvictionRate] = why, why
	}
	return avg, missing
}
