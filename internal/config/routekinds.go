package config

import "strings"

// routeKind is a capability a route can have: its key under the route in
// YAML, whether a route has it, and its checks. A new kind is a field of
// Route, its checks, and one entry in routeKinds; the routing package
// registers how its routes are built under the same key.
type routeKind struct {
	key string
	set func(*Route) bool
	// validate checks the kind's section of r, found at path.
	validate func(v *validator, path string, r *Route)
}

// routeKinds are the route capabilities, in the order errors list them.
var routeKinds = []routeKind{
	{
		key:      "produce",
		set:      func(r *Route) bool { return r.Produce != nil },
		validate: func(v *validator, p string, r *Route) { v.produce(p, r.Produce) },
	},
	{
		key:      "fetch",
		set:      func(r *Route) bool { return r.Fetch != nil },
		validate: func(v *validator, p string, r *Route) { v.fetch(p, r.Fetch); v.fetchGroup(p, r.Fetch) },
	},
}

// RouteKinds returns the keys of every route capability ("produce",
// "fetch"): each is a section a route may have, one at most.
func RouteKinds() []string { return routeKindKeys() }

func routeKindKeys() []string {
	keys := make([]string, len(routeKinds))
	for i, k := range routeKinds {
		keys[i] = k.key
	}
	return keys
}

// routeKindOf returns the first kind r has, or nil.
func routeKindOf(r *Route) *routeKind {
	for i := range routeKinds {
		if routeKinds[i].set(r) {
			return &routeKinds[i]
		}
	}
	return nil
}

// Kind returns the key of the capability the route has, such as
// "produce" or "fetch"; "" when it has none. Validate refuses a route
// with none or several.
func (r *Route) Kind() string {
	if k := routeKindOf(r); k != nil {
		return k.key
	}
	return ""
}

// orList joins words as "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}
