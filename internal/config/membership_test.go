package config

import (
	"os"
	"strings"
	"testing"
)

// TestGroupInstanceID: group instance ids follow Kafka's rule, two back
// ends of one group cannot share one, and ${HOSTNAME} works even where the
// shell did not export it.
func TestGroupInstanceID(t *testing.T) {
	const backends = `
backends:
  - name: a
    topic: t
    target: 127.0.0.1:1
    group_instance_id: %s
  - name: b
    topic: t
    target: 127.0.0.1:1
    group_id: ferry-backend-a
    group_instance_id: %s
`
	for _, tc := range []struct {
		name, a, b, api string
		want            []string
	}{
		{name: "distinct", a: "host-1", b: "host-2"},
		{name: "same id, same group", a: "host-1", b: "host-1", want: []string{
			`backends[1].group_instance_id: "host-1" is also the instance id of backends[0] in group "ferry-backend-a"`,
		}},
		{name: "bad characters", a: `"host 1"`, b: "h/2", want: []string{
			`backends[0].group_instance_id: group instance id "host 1" has ' '`,
			`backends[1].group_instance_id: group instance id "h/2" has '/'`,
		}},
		{name: "too long", a: strings.Repeat("x", 250), b: "ok", api: strings.Repeat("y", 201), want: []string{
			`backends[0].group_instance_id: group instance id is 250 characters long: at most 249 are allowed here`,
			`kafka_api.consume.group_instance_id: group instance id is 201 characters long: at most 200 are allowed here`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := backendsYAML(backends, tc.a, tc.b)
			if tc.api != "" {
				y += "kafka_api: {enabled: true, consume: {group_instance_id: " + tc.api + "}}\n"
			}
			_, err := Parse("f.yaml", []byte(y))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("loaded; want %q", tc.want)
			}
			es := err.(Errors)
			if len(es) != len(tc.want) {
				t.Errorf("got %d errors, want %d:\n%v", len(es), len(tc.want), err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, w)
				}
			}
		})
	}
}

func backendsYAML(format, a, b string) string {
	return strings.Replace(strings.Replace(format, "%s", a, 1), "%s", b, 1)
}

const hostnameYAML = `
backends:
  - topic: t
    target: 127.0.0.1:1
    group_instance_id: ${HOSTNAME}
`

func TestHostnameFallback(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || CheckGroupInstanceID(host, 249) != nil {
		t.Skipf("this host's name %q cannot be checked here (%v)", host, err)
	}
	t.Setenv("HOSTNAME", "")
	os.Unsetenv("HOSTNAME") // as in a shell that does not export it; t.Setenv restores it
	cfg, err := Parse("f.yaml", []byte(hostnameYAML))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Backends[0].GroupInstanceID; got != host {
		t.Errorf("group_instance_id = %q, want the host name %q", got, host)
	}
	t.Setenv("HOSTNAME", "from-env")
	cfg, err = Parse("f.yaml", []byte(hostnameYAML))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Backends[0].GroupInstanceID; got != "from-env" {
		t.Errorf("group_instance_id = %q, want the environment's %q", got, "from-env")
	}
}
