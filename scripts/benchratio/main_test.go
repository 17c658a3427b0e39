package main

import (
	"strings"
	"testing"
)

// Two rounds of two paths and a one-level benchmark, with the log lines and
// summary lines go test prints around them.
const input = `goos: linux
BenchmarkX/direct/100B-2   	  200000	       274.1 ns/op	       377.4 cpu-ns/record	     40 p50-µs	     54 p99-µs	   1000000 records/s
BenchmarkX/ferry/100B-2    	  200000	       832.5 ns/op	      1578 cpu-ns/record	    108 p50-µs	    165 p99-µs	   400000 records/s
BenchmarkX/direct/100B-2   	  200000	       274.1 ns/op	       377.4 cpu-ns/record	     40 p50-µs	     54 p99-µs	   2000000 records/s
BenchmarkX/ferry/100B-2    	  200000	       832.5 ns/op	      1578 cpu-ns/record	    108 p50-µs	    165 p99-µs	   1000000 records/s
BenchmarkX/grpc-floor/100B-2    	  200000	       832.5 ns/op	   3000000 records/s
BenchmarkX/ferry/100B-2 logs a line that is not a result
BenchmarkY-2               	  100	       10 ns/op
PASS
`

func TestReport(t *testing.T) {
	rs, err := parse(strings.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 5 {
		t.Fatalf("parsed %d results, want 5 (sub-benchmarks only): %+v", len(rs), rs)
	}
	if rs[2].round != (round{1, 1}) || rs[2].group != "BenchmarkX/100B" || rs[2].path != "direct" {
		t.Errorf("third result: %+v", rs[2])
	}
	var b strings.Builder
	report(&b, rs)
	out := b.String()
	for _, want := range []string{
		"\nBenchmarkX/100B\n",
		"| direct | 2 | 1,500,000 records/s | — | 40 | 54 | 377 |",
		// Round ratios 0.4 and 0.5: median 0.45, not 700,000 ÷ 1,500,000.
		"| ferry | 2 | 700,000 records/s | **0.45** (0.40–0.50) | 108 | 165 | 1,578 |",
		// The floor ran in the first round only: 3,000,000 ÷ (1,000,000 + 3,000,000).
		"| rate bound | 1 | | **0.75** (0.75–0.75) | | | |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestParseUnpairedValues(t *testing.T) {
	_, err := parse(strings.NewReader("BenchmarkX/direct-2 10 5 ns/op 7\n"))
	if err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("got %v, want an error naming line 1", err)
	}
}

func TestThousands(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567", -1500: "-1,500"} {
		if got := thousands(v); got != want {
			t.Errorf("thousands(%v) = %q, want %q", v, got, want)
		}
	}
}

// TestRoundsByProcess: a path missing from one process's round pairs the
// next process's results with that process's direct run, not an earlier one.
func TestRoundsByProcess(t *testing.T) {
	in := `goos: linux
BenchmarkX/direct-2 1 1 ns/op 100 records/s
goos: linux
BenchmarkX/direct-2 1 1 ns/op 200 records/s
BenchmarkX/ferry-2 1 1 ns/op 100 records/s
`
	rs, err := parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	report(&b, rs)
	// 100 ÷ 200 of the second process, not 100 ÷ 100 of the first.
	if want := "| ferry | 1 | 100 records/s | **0.50** (0.50–0.50) |"; !strings.Contains(b.String(), want) {
		t.Errorf("report lacks %q:\n%s", want, b.String())
	}
}

func TestRateUnit(t *testing.T) {
	if got := rateUnit(map[string]float64{"MB/s": 1, "records/s": 2, "ns/op": 3}); got != "records/s" {
		t.Errorf("rateUnit = %q, want records/s", got)
	}
	if got := rateUnit(map[string]float64{"MB/s": 1}); got != "MB/s" {
		t.Errorf("rateUnit = %q, want MB/s", got)
	}
}
