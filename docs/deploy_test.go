package docs

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/ferryproxy/ferry/internal/config"
)

// metricName matches a Ferry metric name in a dashboard, a rule or the
// operations guide.
var metricName = regexp.MustCompile(`ferry_[a-z0-9_]*[a-z0-9]`)

// documentedMetrics reads the metric tables of OPERATIONS.md's "Metrics"
// section: every name it lists, with whether it is a histogram.
func documentedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	data, err := os.ReadFile("OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start := strings.Index(text, "\n## Metrics\n")
	if start < 0 {
		t.Fatal(`OPERATIONS.md has no "## Metrics" section`)
	}
	section := text[start+1:]
	if end := strings.Index(section[1:], "\n## "); end >= 0 {
		section = section[:end+1]
	}
	names := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `ferry_") {
			continue
		}
		cells := strings.Split(line, "|")
		histogram := len(cells) > 2 && strings.TrimSpace(cells[2]) == "histogram"
		for _, n := range metricName.FindAllString(cells[1], -1) {
			names[n] = histogram
		}
	}
	if len(names) == 0 {
		t.Fatal("no metric found in OPERATIONS.md's Metrics section")
	}
	return names
}

// checkMetrics fails for every ferry_ name in data that OPERATIONS.md does
// not list: a histogram's _bucket, _sum and _count series count as the
// histogram.
func checkMetrics(t *testing.T, file string, data []byte, documented map[string]bool) {
	t.Helper()
	seen := 0
	for _, n := range metricName.FindAllString(string(data), -1) {
		seen++
		if _, ok := documented[n]; ok {
			continue
		}
		found := false
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suffix); ok && documented[base] {
				found = true
			}
		}
		if !found {
			t.Errorf("%s uses %s, which docs/OPERATIONS.md's Metrics section does not list", file, n)
		}
	}
	if seen == 0 {
		t.Errorf("%s uses no Ferry metric", file)
	}
}

func deployFiles(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "deploy", pattern))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no file matches deploy/%s", pattern)
	}
	sort.Strings(files)
	return files
}

// TestDashboards checks that every Grafana dashboard parses and uses only
// documented metrics.
func TestDashboards(t *testing.T) {
	documented := documentedMetrics(t)
	for _, f := range deployFiles(t, "grafana/*.json") {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var dash struct {
			Title  string            `json:"title"`
			Panels []json.RawMessage `json:"panels"`
		}
		if err := json.Unmarshal(data, &dash); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if dash.Title == "" || len(dash.Panels) == 0 {
			t.Errorf("%s: a dashboard needs a title and panels", f)
		}
		checkMetrics(t, f, data, documented)
	}
}

// TestAlertRules checks that every rule file parses, that every rule has
// alert, expr, for and annotations, and that it uses only documented
// metrics.
func TestAlertRules(t *testing.T) {
	documented := documentedMetrics(t)
	for _, f := range deployFiles(t, "prometheus/*.yaml") {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var file struct {
			Groups []struct {
				Name  string `yaml:"name"`
				Rules []struct {
					Alert       string            `yaml:"alert"`
					Expr        string            `yaml:"expr"`
					For         string            `yaml:"for"`
					Labels      map[string]string `yaml:"labels"`
					Annotations map[string]string `yaml:"annotations"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&file); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		rules := 0
		for _, g := range file.Groups {
			for i, r := range g.Rules {
				rules++
				if r.Alert == "" || strings.TrimSpace(r.Expr) == "" || r.For == "" || len(r.Annotations) == 0 {
					t.Errorf("%s: group %s, rule %d (%q) needs alert, expr, for and annotations", f, g.Name, i, r.Alert)
				}
				if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
					t.Errorf("%s: rule %s needs a summary and a description", f, r.Alert)
				}
			}
		}
		if rules == 0 {
			t.Errorf("%s has no rule", f)
		}
		checkMetrics(t, f, data, documented)
	}
}

// TestKubernetesConfig checks that the ferry.yaml of every ConfigMap in the
// Kubernetes manifests is a configuration Ferry accepts.
func TestKubernetesConfig(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "kafka-0.kafka:9092,kafka-1.kafka:9092")
	t.Setenv("HOSTNAME", "ferry-0")
	for _, f := range deployFiles(t, "kubernetes/*.yaml") {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		configs := 0
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var doc struct {
				Kind string            `yaml:"kind"`
				Data map[string]string `yaml:"data"`
			}
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if doc.Kind != "ConfigMap" || doc.Data["ferry.yaml"] == "" {
				continue
			}
			configs++
			cfg, err := config.Parse(f+": ferry.yaml", []byte(doc.Data["ferry.yaml"]))
			if err != nil {
				t.Errorf("%s: the ConfigMap's ferry.yaml is refused: %v", f, err)
				continue
			}
			if got := cfg.Clusters[0].Brokers; len(got) != 2 {
				t.Errorf("%s: brokers %q, want the two of KAFKA_BROKERS", f, got)
			}
		}
		if configs == 0 {
			t.Errorf("%s holds no ConfigMap with a ferry.yaml", f)
		}
	}
}
