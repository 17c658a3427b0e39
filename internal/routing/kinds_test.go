package routing

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/protoreg"
)

type stubRoute struct{ name string }

func (stubRoute) Bind(*protoreg.Method) error                                  { return nil }
func (stubRoute) Serve(grpc.ServerStream, *protoreg.Method, metadata.MD) error { return nil }

// TestKinds: each route is built by the kind its section names, with
// Check or Build; Build's errors are all returned.
func TestKinds(t *testing.T) {
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "ferry.yaml"), []byte(`
protos: [{files: [a.proto]}]
routes:
  - name: p
    when: [{method: a.S/*}]
    produce: {topic: t}
  - name: f
    when: [{method: a.S/F}]
    fetch: {topic: t}
`))
	if err != nil {
		t.Fatal(err)
	}
	var built []string
	ks := Kinds{
		"produce": {
			Check: func(rc config.Route) Route { return stubRoute{"check " + rc.Name} },
			Build: func(rc config.Route) (Route, error) { return nil, errors.New("no producer for " + rc.Name) },
		},
		"fetch": {
			Check: func(rc config.Route) Route { return stubRoute{"check " + rc.Name} },
			Build: func(rc config.Route) (Route, error) { built = append(built, rc.Name); return stubRoute{rc.Name}, nil },
		},
	}
	routes, err := ks.Check(cfg)
	if err != nil || routes["p"].(stubRoute).name != "check p" || routes["f"].(stubRoute).name != "check f" {
		t.Errorf("Check = %v, %v", routes, err)
	}
	routes, err = ks.Build(cfg)
	if err == nil || !strings.Contains(err.Error(), "no producer for p") || routes["f"] == nil || len(built) != 1 {
		t.Errorf("Build = %v, %v; want f built and p's error", routes, err)
	}
	delete(ks, "fetch")
	if _, err := ks.Check(cfg); err == nil || !strings.Contains(err.Error(), `no route kind "fetch"`) {
		t.Errorf("Check without fetch registered: %v", err)
	}
}
