package app

import (
	"fmt"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/fetch"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/produce"
	"github.com/ferryproxy/ferry/internal/routing"
)

// routeKinds registers every route kind, by the key of its configuration
// section: how a route of that kind is checked without connections, and
// how a running App builds it. A new kind is a package and an entry here
// (and its section in config). Check never touches a, which is nil when
// only checking.
func routeKinds(a *App) routing.Kinds {
	return routing.Kinds{
		"produce": {
			Check: func(rc config.Route) routing.Route {
				return produce.NewRoute(nil, rc.Name, rc.Produce, nil, nil, 0)
			},
			Build: func(rc config.Route) (routing.Route, error) { return a.produceRoute(rc) },
		},
		"fetch": {
			Check: func(rc config.Route) routing.Route { return fetchRoute(rc, nil, nil) },
			Build: func(rc config.Route) (routing.Route, error) { return fetchRoute(rc, a.hubs, a.groups), nil },
		},
	}
}

// fetchRoute is a fetch route served from hubs, or, with a group, by the
// group engines.
func fetchRoute(rc config.Route, hubs *fetch.Hubs, groups *fetch.Groups) routing.Route {
	if rc.Fetch.Group != nil {
		return fetch.NewGroupRoute(rc.Name, rc.Fetch, groups)
	}
	return fetch.NewRoute(rc.Name, rc.Fetch, hubs)
}

// produceRoute builds a produce route on its cluster's producer, and
// starts the reader of its reply topic unless another route started it:
// one reader per reply topic and cluster serves every route reading it.
func (a *App) produceRoute(rc config.Route) (routing.Route, error) {
	p := rc.Produce
	cl := a.clusters[p.Cluster]
	producer, err := cl.Producer(kafka.Acks(p.Acks))
	if err != nil {
		return nil, err
	}
	var rd *produce.Reader
	if p.ReplyTo != "" {
		key := [2]string{p.Cluster, p.ReplyTo}
		if rd = a.readerOf[key]; rd == nil {
			start := a.replyStart
			kc, err := cl.NewReader(p.ReplyTo, start)
			if err != nil {
				return nil, err
			}
			rd = produce.StartReader(a.ctx, kc, start, produce.ReaderOptions{
				Topic: p.ReplyTo, Names: p.HeaderNames, Replies: a.cfg.Replies, Logger: a.logger,
			})
			a.readerOf[key] = rd
			a.readers = append(a.readers, rd)
			a.own(fmt.Sprintf("the reader of reply topic %q (clusters: %s)", p.ReplyTo, p.Cluster), rd)
		}
	}
	rt := produce.NewRoute(a.runtime, rc.Name, p, producer, rd, a.cfg.Replies.MaxBufferedPerCall)
	if a.measuring() {
		rt.Measure(a.metrics.ProduceRoute(rc.Name))
	}
	return rt, nil
}
