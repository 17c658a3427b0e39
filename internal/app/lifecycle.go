package app

import (
	"context"
	"errors"
	"fmt"
)

// component is one part of a running Ferry. Start adds components in
// order and Close stops them in reverse, as Caddy provisions modules and
// cleans them up, and as franz-go's client closes what it opened last
// first: whatever a component uses was started before it and is still
// there while it stops.
type component struct {
	name string
	// start starts the component; nil when there is nothing to start
	// (the component was built before and only needs stopping).
	start func(ctx context.Context) error
	// stop stops the component, and must cope with a start that failed
	// half-way: it runs whenever start ran. Nil when there is nothing to
	// stop.
	stop func(ctx context.Context) error
}

// add starts c and puts it on the list Close unwinds. c is put on the
// list first, so a start that fails half-way is undone by its stop.
func (a *App) add(ctx context.Context, c component) error {
	a.components = append(a.components, c)
	if c.start == nil {
		return nil
	}
	return c.start(ctx)
}

// unwind stops every component in reverse order of start, each once,
// and returns their errors joined, each naming its component.
func (a *App) unwind(ctx context.Context) error {
	var errs []error
	for len(a.components) > 0 {
		c := a.components[len(a.components)-1]
		a.components = a.components[:len(a.components)-1]
		if c.stop == nil {
			continue
		}
		if err := c.stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stopping %s: %w", c.name, err))
		}
	}
	return errors.Join(errs...)
}
