package routing

import (
	"errors"
	"fmt"

	"github.com/ferryproxy/ferry/internal/config"
)

// Kind is how the routes of one capability are built. A configured route
// names its kind by its section (config.Route.Kind); the section's checks
// live with the configuration, the checks against a method in the route's
// Bind.
type Kind struct {
	// Check returns a route that can only Bind: without connections, for
	// checking a configuration against the loaded protos.
	Check func(rc config.Route) Route
	// Build returns a route that serves calls, from what the App started.
	Build func(rc config.Route) (Route, error)
}

// Kinds are the route kinds, by the key of their configuration section.
// Ferry registers every kind in one place (internal/app): a new kind is a
// package and one entry there.
type Kinds map[string]Kind

// Check returns every route of cfg built with its kind's Check, by name.
func (ks Kinds) Check(cfg *config.Config) (map[string]Route, error) {
	return ks.routes(cfg, func(k Kind, rc config.Route) (Route, error) { return k.Check(rc), nil })
}

// Build returns every route of cfg built with its kind's Build, by name.
// It builds them all, and returns every error.
func (ks Kinds) Build(cfg *config.Config) (map[string]Route, error) {
	return ks.routes(cfg, func(k Kind, rc config.Route) (Route, error) { return k.Build(rc) })
}

func (ks Kinds) routes(cfg *config.Config, build func(Kind, config.Route) (Route, error)) (map[string]Route, error) {
	m := make(map[string]Route, len(cfg.Routes))
	var errs []error
	for _, rc := range cfg.Routes {
		k, ok := ks[rc.Kind()]
		if !ok {
			// Validate refuses a route without a kind; a kind without a
			// registration is Ferry's mistake.
			errs = append(errs, fmt.Errorf("route %s: no route kind %q is registered", rc.Name, rc.Kind()))
			continue
		}
		r, err := build(k, rc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m[rc.Name] = r
	}
	return m, errors.Join(errs...)
}
