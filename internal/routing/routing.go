// Package routing is Ferry's catch-all gRPC handler: it finds the loaded
// method a call names and the first configured route that matches the
// call's method and metadata, and hands the call to that route's
// capability (produce, fetch).
package routing

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/auth"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/edge"
	"github.com/ferryproxy/ferry/internal/protoreg"
)

// Route is one configured route's capability.
type Route interface {
	// Bind prepares the route for a method one of its conditions names,
	// once, when the table is built; an error rejects the configuration.
	Bind(m *protoreg.Method) error
	// Serve carries one call. The stream exchanges *frame.Frame.
	Serve(ss grpc.ServerStream, m *protoreg.Method, md metadata.MD) error
}

// Table finds the route of a call: for each method, the routes whose
// conditions name it, in configuration order; the first whose metadata
// matches wins.
type Table struct {
	reg      *protoreg.Registry
	byMethod map[string][]candidate
}

type candidate struct {
	route    Route
	name     string // routes[].name
	metadata map[string]string
	allow    auth.Allow
}

// NewTable builds the table for cfg's routes, given by name. Every
// condition must match a loaded method and every route must accept the
// methods it names; the errors are located in the configuration file.
func NewTable(cfg *config.Config, reg *protoreg.Registry, routes map[string]Route) (*Table, error) {
	t := &Table{reg: reg, byMethod: map[string][]candidate{}}
	var errs config.Errors
	for i, rc := range cfg.Routes {
		r := routes[rc.Name]
		allow := auth.NewAllow(rc.Name, rc.Allow)
		bound := map[string]bool{}
		for j, w := range rc.When {
			path := fmt.Sprintf("routes[%d].when[%d].method", i, j)
			ms := reg.Match(w.Method)
			if len(ms) == 0 {
				errs = append(errs, cfg.Errorf(path, "no loaded proto defines a method matching %q: check the name and the protos section", w.Method))
				continue
			}
			for _, m := range ms {
				if !bound[m.Path] {
					bound[m.Path] = true
					if err := r.Bind(m); err != nil {
						errs = append(errs, cfg.Errorf(path, "%v", err))
						continue
					}
				}
				t.byMethod[m.Path] = append(t.byMethod[m.Path], candidate{route: r, name: rc.Name, metadata: w.Metadata, allow: allow})
			}
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return t, nil
}

// match returns the route for a call of method path with metadata md.
// Every metadata entry a condition lists must be present with that value.
func (t *Table) match(path string, md metadata.MD) *candidate {
	for i := range t.byMethod[path] {
		if c := &t.byMethod[path][i]; matchMetadata(c.metadata, md) {
			return c
		}
	}
	return nil
}

func matchMetadata(want map[string]string, md metadata.MD) bool {
	for k, v := range want {
		found := false
		for _, got := range md.Get(k) {
			if got == v {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Handle serves one call; it is the gRPC server's catch-all handler.
func (t *Table) Handle(_ any, ss grpc.ServerStream) error {
	path, _ := grpc.MethodFromServerStream(ss)
	m, ok := t.reg.Method(path)
	if !ok {
		return status.Errorf(codes.Unimplemented, "unknown method %s: no proto Ferry loaded defines it", path)
	}
	md, _ := metadata.FromIncomingContext(ss.Context())
	c := t.match(path, md)
	if c == nil {
		if len(t.byMethod[path]) > 0 {
			return status.Errorf(codes.Unimplemented, "method %s: no route matches this call's metadata", path)
		}
		return status.Errorf(codes.Unimplemented, "method %s is not routed: no route names it", path)
	}
	if call := edge.FromContext(ss.Context()); call != nil {
		call.SetRouteName(c.name)
	}
	// The route's rules, not the method's: routes of one method may serve
	// different callers, told apart by their metadata.
	if err := c.allow.Check(ss.Context(), m.Path); err != nil {
		return err
	}
	return c.route.Serve(ss, m, md)
}
