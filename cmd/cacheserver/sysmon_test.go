package main

import "testing"

func TestSetsSchedtrace(t *testing.T) {
	for godebug, want := range map[string]bool{
		"":                            false,
		"scheddetail=1":               false,
		"xschedtrace=1,http2client=0": false,
		"schedtrace=0":                true,
		"http2client=0, schedtrace=5": true,
	} {
		if got := setsSchedtrace(godebug); got != want {
			t.Errorf("setsSchedtrace(%q) = %v, want %v", godebug, got, want)
		}
	}
}
