package app

import (
	"context"

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
	return a.add(ctx, "the sources", m)
}

// SourceStatus returns the status of every source, nil without sources.
func (a *App) SourceStatus() []ingest.Status {
	if a.sources == nil {
		return nil
	}
	return a.sources.Status()
}
