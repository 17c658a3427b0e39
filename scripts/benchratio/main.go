// Command benchratio summarizes rounds of Ferry's path benchmarks: those
// whose sub-benchmarks are named Benchmark<Name>/<path>[/<variant>], with a
// "direct" path (franz-go straight to the broker) beside "ferry",
// "grpc-floor" and others. It reads `go test -bench` output holding one or
// more rounds (each round runs every path once) and prints, per benchmark
// and variant, a Markdown table: the median of each path's figures, and the
// median and range of each path's throughput over direct's in the same
// round.
//
// Ratios are taken within a round because these machines drift: a path
// measured minutes after another may see a different machine, and pairing
// runs that ran side by side cancels most of that.
//
//	scripts/bench.sh 5 'KafkaAPIProduceStream' 200000x   # runs the rounds, then this
//	go run ./scripts/benchratio < bench.txt
package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

// baseline is the path the others are divided by.
const baseline = "direct"

// result is one run of one sub-benchmark.
type result struct {
	group, path string
	round       round
	metrics     map[string]float64 // unit → value
}

// round names the run a result belongs to: the test process that printed
// it (counted by the "goos:" header every process prints first) and, for
// -count above 1, the how-manieth time that process ran the sub-benchmark.
// Results pair with direct's of the same round, so a path missing from one
// round does not shift the pairs of the later ones.
type round struct{ process, run int }

func main() {
	results, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchratio:", err)
		os.Exit(1)
	}
	if len(results) == 0 {
		fmt.Fprintln(os.Stderr, "benchratio: no benchmark results of the form Benchmark<Name>/<path>[/<variant>] on standard input")
		os.Exit(1)
	}
	report(os.Stdout, results)
}

// parse reads benchmark result lines and the process headers between them.
func parse(r io.Reader) ([]result, error) {
	var out []result
	process := 0
	seen := map[string]int{} // runs of each sub-benchmark in this process
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		if strings.HasPrefix(sc.Text(), "goos:") {
			process++
			clear(seen)
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue // a log line that merely starts with a benchmark's name
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i] // the GOMAXPROCS suffix
			}
		}
		parts := strings.Split(name, "/")
		if len(parts) < 2 {
			continue
		}
		res := result{
			group:   strings.Join(append([]string{parts[0]}, parts[2:]...), "/"),
			path:    parts[1],
			round:   round{process, seen[name]},
			metrics: map[string]float64{},
		}
		seen[name]++
		if (len(f)-2)%2 != 0 {
			return nil, fmt.Errorf("line %d: values and units do not pair up: %q", line, sc.Text())
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: value %q of %s: %v", line, f[i], f[i+1], err)
			}
			res.metrics[f[i+1]] = v
		}
		out = append(out, res)
	}
	return out, sc.Err()
}

// rateUnit is the throughput unit of a result: the one that ends in "/s",
// preferring a count (records/s) to go test's own MB/s when it has both.
func rateUnit(m map[string]float64) string {
	var units []string
	for u := range m {
		if strings.HasSuffix(u, "/s") {
			units = append(units, u)
		}
	}
	slices.Sort(units)
	for _, u := range units {
		if u != "MB/s" {
			return u
		}
	}
	if len(units) > 0 {
		return units[0]
	}
	return ""
}

// report prints one table per group, paths in the order they first ran.
func report(w io.Writer, results []result) {
	var groups []string
	paths := map[string][]string{}
	byKey := map[[2]string][]result{}
	for _, r := range results {
		if _, ok := paths[r.group]; !ok {
			groups = append(groups, r.group)
		}
		k := [2]string{r.group, r.path}
		if len(byKey[k]) == 0 {
			paths[r.group] = append(paths[r.group], r.path)
		}
		byKey[k] = append(byKey[k], r)
	}
	for _, g := range groups {
		base := map[round]result{}
		for _, r := range byKey[[2]string{g, baseline}] {
			base[r.round] = r
		}
		fmt.Fprintf(w, "\n%s\n\n", g)
		fmt.Fprintln(w, "| path | runs | rate | ÷ direct (median, range) | p50 µs | p99 µs | CPU ns/record |")
		fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
		for _, p := range paths[g] {
			rs := byKey[[2]string{g, p}]
			unit := rateUnit(rs[0].metrics)
			var ratios []float64
			for _, r := range rs {
				if b, ok := base[r.round]; ok && p != baseline && b.metrics[unit] > 0 {
					ratios = append(ratios, r.metrics[unit]/b.metrics[unit])
				}
			}
			ratio := "—"
			if len(ratios) > 0 {
				ratio = fmt.Sprintf("**%.2f** (%.2f–%.2f)", median(ratios), slices.Min(ratios), slices.Max(ratios))
			}
			fmt.Fprintf(w, "| %s | %d | %s %s | %s | %s | %s | %s |\n", p, len(rs),
				figure(rs, unit), unit, ratio, figure(rs, "p50-µs"), figure(rs, "p99-µs"), figure(rs, "cpu-ns/record"))
		}
		if bounds := rateBounds(base, byKey[[2]string{g, floor}]); len(bounds) > 0 {
			fmt.Fprintf(w, "| rate bound | %d | | **%.2f** (%.2f–%.2f) | | | |\n",
				len(bounds), median(bounds), slices.Min(bounds), slices.Max(bounds))
		}
	}
}

// floor is the path that does the gRPC work of a Ferry path without Kafka.
const floor = "grpc-floor"

// rateBounds are, per round, the rate bound over direct's rate: a proxy
// that does both direct's work and the floor's, one after the other on
// shared cores, and nothing else, reaches at most 1 ÷ (1/direct + 1/floor),
// which over direct is floor ÷ (direct + floor).
func rateBounds(base map[round]result, floors []result) []float64 {
	var out []float64
	for _, f := range floors {
		b, ok := base[f.round]
		if !ok {
			continue
		}
		unit := rateUnit(b.metrics)
		if d, fl := b.metrics[unit], f.metrics[unit]; d > 0 && fl > 0 {
			out = append(out, fl/(d+fl))
		}
	}
	return out
}

// figure is the median of unit over rs, or "—" when they lack it.
func figure(rs []result, unit string) string {
	var vs []float64
	for _, r := range rs {
		if v, ok := r.metrics[unit]; ok {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return "—"
	}
	return thousands(median(vs))
}

// median of vs, which it sorts.
func median(vs []float64) float64 {
	slices.Sort(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

// thousands formats v rounded to an integer with comma separators.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
