package app

import (
	"slices"
	"sort"
	"testing"

	"github.com/ferryproxy/ferry/internal/config"
)

// TestRouteKindsRegistered: every route kind the configuration knows has
// its registration, and no registration is for a kind it does not know.
func TestRouteKindsRegistered(t *testing.T) {
	var registered []string
	for k := range routeKinds(nil) {
		registered = append(registered, k)
	}
	sort.Strings(registered)
	known := config.RouteKinds()
	sort.Strings(known)
	if !slices.Equal(registered, known) {
		t.Errorf("registered route kinds %q, the configuration's %q", registered, known)
	}
}
