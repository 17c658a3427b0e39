package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferryproxy/ferry/internal/backend"
	"github.com/ferryproxy/ferry/internal/fetch"
	"github.com/ferryproxy/ferry/internal/grpcserver"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/kafkaapi"
	"github.com/ferryproxy/ferry/internal/produce"
)

// Component is one part of a running Ferry. Start adds components in
// order and Close stops them in reverse, as Caddy provisions modules and
// cleans them up, and as franz-go's client closes what it opened last
// first: whatever a component uses was started before it and is still
// there while it stops.
type Component interface {
	// Close stops the component and releases what it holds. It is
	// idempotent, and works after a partial start: a Start that failed
	// half-way, or none. When ctx ends before Close is done, it stops
	// waiting and returns an error that wraps ctx's and says what it
	// abandoned.
	Close(ctx context.Context) error
}

// Starter is a Component with something to start once it is built: Start
// connects, or starts its goroutines. A component without it runs from
// its constructor on.
type Starter interface {
	Component
	Start(ctx context.Context) error
}

// The components of every package have the one shape.
var (
	_ Component = (*kafka.Embedded)(nil)
	_ Starter   = (*kafka.Cluster)(nil)
	_ Component = (*produce.Reader)(nil)
	_ Starter   = (*backend.Backend)(nil)
	_ Component = (*fetch.Hubs)(nil)
	_ Component = (*produce.Runtime)(nil)
	_ Component = (*grpcserver.Server)(nil)
	_ Component = (*kafkaapi.Service)(nil)
	_ Starter   = servers{}
	_ Starter   = (*admin)(nil)
)

// closeFunc is a Component that is only a Close: a part of App itself that
// must stop at a given place in the order (each says why in Start).
type closeFunc func(ctx context.Context) error

func (f closeFunc) Close(ctx context.Context) error { return f(ctx) }

// component is a Component on App's list, with the name its errors carry.
type component struct {
	name string
	c    Component
}

// add puts c on the list Close unwinds and, if it is a Starter, starts
// it. c is put on the list first, so a start that fails half-way is undone
// by its Close.
func (a *App) add(ctx context.Context, name string, c Component) error {
	a.own(name, c)
	if s, ok := c.(Starter); ok {
		return s.Start(ctx)
	}
	return nil
}

// own puts c, which runs from its constructor on, on the list Close
// unwinds.
func (a *App) own(name string, c Component) {
	a.components = append(a.components, component{name, c})
}

// unwind stops every component in reverse order of start, each once,
// and returns their errors joined, each naming its component.
func (a *App) unwind(ctx context.Context) error {
	var errs []error
	for len(a.components) > 0 {
		c := a.components[len(a.components)-1]
		a.components = a.components[:len(a.components)-1]
		if err := c.c.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stopping %s: %w", c.name, err))
		}
	}
	return errors.Join(errs...)
}
