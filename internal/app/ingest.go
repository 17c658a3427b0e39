package app

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/ferryproxy/ferry/internal/ingest"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/protoreg"
)

// startSources joins the ingest group when sources are configured; the
// sources this instance is given run until it stops. They stop before the
// clusters, whose producers write what they read.
func (a *App) startSources(ctx context.Context, reg *protoreg.Registry) error {
	if len(a.cfg.Sources) == 0 {
		return nil
	}
	m, err := ingest.New(ingest.Options{
		Config:        a.cfg,
		Registry:      reg,
		Clusters:      func(name string) *kafka.Cluster { return a.clusters[name] },
		DialOptions:   a.edge.DialOptions,
		RecordContext: a.ctx,
		Logger:        a.logger,
	})
	if err != nil {
		return err
	}
	a.sources = m
	if a.metrics != nil {
		a.metrics.WatchSources(m.Status)
	}
	return a.add(ctx, "the sources", m)
}

// serveSources answers GET /sources on the admin listener: every source's
// status on this instance, as JSON.
func (a *App) serveSources(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	st := a.SourceStatus()
	if st == nil {
		st = []ingest.Status{}
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"sources": st})
}

// SourceStatus returns the status of every source, nil without sources.
func (a *App) SourceStatus() []ingest.Status {
	if a.sources == nil {
		return nil
	}
	return a.sources.Status()
}
