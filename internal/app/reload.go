package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/ferryproxy/ferry/internal/backend"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/protoreg"
	"github.com/ferryproxy/ferry/internal/routing"
)

// liveBackend is a running back end and the configuration it runs with.
type liveBackend struct {
	cfg config.Backend
	b   *backend.Backend
}

// Reload applies a new configuration to the running Ferry without a
// restart: its routes (and the protos they name, and who may call them),
// its back ends, and what callers may do through the Kafka API
// (kafka_api.allow). It
// checks cfg as `ferry validate` does (Validate), and builds every new
// route before it swaps the routing table in one step, so a call is routed
// either by the old table or by the new one. Calls already running keep
// the route they started on and finish on it: a call on a removed or
// changed route ends as it would have. Back ends that were removed or
// changed stop as at shutdown (their running calls drain within
// drain_timeout, they commit and leave their group); new and changed ones
// start. A section Ferry cannot change while it runs (clusters, embedded,
// listeners, auth, kafka_api but its allow rules, fetch, replies,
// tracing, shutdown) makes
// Reload refuse the whole configuration, naming the section: those need a
// restart. The log section is the one Ferry started with (flags may have
// overridden it); a change to it is noted and waits for a restart. On any
// error the running configuration stays as it was.
func (a *App) Reload(ctx context.Context, cfg *config.Config) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if a.closing {
		return errors.New("not reloaded: Ferry is shutting down")
	}
	if cfg.Log != a.cfg.Log {
		a.logger.Info("the log section applies at the next restart", "file", cfg.File())
		cfg.Log = a.cfg.Log
	}
	if changed := restartSections(a.cfg, cfg); len(changed) > 0 {
		return fmt.Errorf("%s: %s changed, which needs a restart: the running configuration stays", cfg.File(), strings.Join(changed, ", "))
	}
	reg, err := validate(ctx, cfg)
	if err != nil {
		return err
	}
	// Building the routes may start the readers of new reply topics; a
	// reply topic no route reads any more keeps its reader until Ferry
	// stops.
	routes, err := routeKinds(a).Build(cfg)
	if err != nil {
		return err
	}
	table, err := routing.NewTable(cfg, reg, routes)
	if err != nil {
		return err
	}
	if a.web != nil {
		if err := a.web.SetServices(reg.Services()); err != nil {
			return err
		}
	}
	a.table.Store(table)
	a.knowMethods(reg)
	prewarm(a.hubs, cfg)
	if a.kafkaAPI != nil {
		// Produce and poll settings apply to calls from now on, consume
		// settings to the group members that join from now on.
		a.kafkaAPI.SetConfig(cfg.KafkaAPI)
		if !reflect.DeepEqual(a.apiAllow, cfg.KafkaAPI.Allow) {
			a.setAPIPolicy(cfg.KafkaAPI.Allow)
		}
	}
	a.reloadBackends(ctx, cfg.Backends, reg)
	a.logger.Info("configuration reloaded", "file", cfg.File(), "routes", len(cfg.Routes), "backends", len(cfg.Backends))
	return nil
}

// reloadBackends stops the back ends that are gone or changed and starts
// the new and changed ones, which find the methods they convert in reg, as
// the kept ones do from now on. A back end that fails to start is logged
// and left out; the others run.
//
// It runs under reloadMu, drains included, though a drain can take a back
// end's drain_timeout: the stopped back ends drain at once, so a reload
// waits for the longest drain, not their sum. Draining after unlocking
// would be unsafe as things stand: a changed back end must have left its
// group before its successor of the same name joins, and a Reload coming
// meanwhile would not see the draining back end in the list and start
// that name a second time; Close, which takes reloadMu to refuse further
// starts, would also no longer wait for the drain through the lock.
func (a *App) reloadBackends(ctx context.Context, want []config.Backend, reg *protoreg.Registry) {
	keep := map[string]bool{}
	for _, bc := range want {
		if lb, ok := a.backendOf(bc.Name); ok && reflect.DeepEqual(lb.cfg, bc) {
			keep[bc.Name] = true
		}
	}
	a.backendsMu.Lock()
	var stop []liveBackend
	next := a.backends[:0:0]
	for _, lb := range a.backends {
		if keep[lb.cfg.Name] {
			lb.b.SetRegistry(reg)
			next = append(next, lb)
		} else {
			stop = append(stop, lb)
		}
	}
	a.backends = next
	a.backendsMu.Unlock()
	var draining sync.WaitGroup
	for _, lb := range stop {
		draining.Go(func() {
			if err := lb.b.Close(ctx); err != nil {
				a.logger.Warn("stopping a back end for the new configuration", "backend", lb.cfg.Name, "err", err)
			}
		})
	}
	draining.Wait()
	for _, bc := range want {
		if keep[bc.Name] {
			continue
		}
		if err := a.startBackend(ctx, bc, reg); err != nil {
			a.logger.Error("starting a back end of the new configuration", "backend", bc.Name, "err", err)
		}
	}
}

// backendOf returns the running back end named name.
func (a *App) backendOf(name string) (liveBackend, bool) {
	a.backendsMu.Lock()
	defer a.backendsMu.Unlock()
	for _, lb := range a.backends {
		if lb.cfg.Name == name {
			return lb, true
		}
	}
	return liveBackend{}, false
}

// restartSections names the sections of next that differ from cur and
// that a running Ferry cannot change.
func restartSections(cur, next *config.Config) []string {
	var changed []string
	for _, s := range []struct {
		name      string
		cur, next any
	}{
		{"clusters", cur.Clusters, next.Clusters},
		{"embedded", cur.Embedded, next.Embedded},
		{"listeners", cur.Listeners, next.Listeners},
		{"auth", cur.Auth, next.Auth},
		{"kafka_api.enabled", cur.KafkaAPI.Enabled, next.KafkaAPI.Enabled},
		{"kafka_api.pixy", cur.KafkaAPI.Pixy, next.KafkaAPI.Pixy},
		{"fetch", cur.Fetch, next.Fetch},
		{"replies", cur.Replies, next.Replies},
		{"tracing", cur.Tracing, next.Tracing},
		{"shutdown", cur.Shutdown, next.Shutdown},
		{"sources", cur.Sources, next.Sources},
		{"ingest", cur.Ingest, next.Ingest},
	} {
		if !reflect.DeepEqual(s.cur, s.next) {
			changed = append(changed, s.name)
		}
	}
	return changed
}

// watchedFiles returns the files a configuration is read from: the file
// itself, the .proto files and descriptor sets it names (each .proto as
// found in its import paths).
func watchedFiles(cfg *config.Config) []string {
	dir := filepath.Dir(cfg.File())
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	files := []string{cfg.File()}
	for _, s := range cfg.Protos {
		if s.DescriptorSet != "" {
			files = append(files, abs(s.DescriptorSet))
		}
		paths := s.ImportPaths
		if len(paths) == 0 {
			paths = []string{"."}
		}
		for _, f := range s.Files {
			for _, ip := range paths {
				if p := filepath.Join(abs(ip), f); fileExists(p) {
					files = append(files, p)
					break
				}
			}
		}
	}
	return files
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// fileStamps describes the files as of now: a change of any size or
// modification time (or a file appearing or going) changes it.
func fileStamps(files []string) string {
	var b strings.Builder
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%s %d %d\n", f, fi.Size(), fi.ModTime().UnixNano())
		} else {
			fmt.Fprintf(&b, "%s missing\n", f)
		}
	}
	return b.String()
}

// reloadWatcher reloads the configuration file on SIGHUP and whenever
// it, or a .proto file or descriptor set it names, changes.
type reloadWatcher struct {
	a      *App
	files  []string
	stamps string
}

// newReloadWatcher notes the files of the running configuration as they
// are now: a change after this is a reason to reload.
func (a *App) newReloadWatcher() *reloadWatcher {
	files := watchedFiles(a.cfg)
	return &reloadWatcher{a: a, files: files, stamps: fileStamps(files)}
}

// run reloads on a signal on hup, or a change seen by a check every
// interval, until ctx ends. A configuration that does not load or that
// Reload refuses is logged, and the running one stays.
func (w *reloadWatcher) run(ctx context.Context, hup <-chan os.Signal, interval time.Duration) {
	a, file := w.a, w.a.cfg.File()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			a.logger.Info("reloading the configuration (SIGHUP)", "file", file)
		case <-tick.C:
			now := fileStamps(w.files)
			if now == w.stamps {
				continue
			}
			w.stamps = now
			a.logger.Info("reloading the configuration: a file changed", "file", file)
		}
		cfg, err := config.Load(file)
		if err == nil {
			err = a.Reload(ctx, cfg)
		}
		if err != nil {
			a.logger.Error("the configuration was not reloaded: the running one stays", "err", err)
			continue
		}
		// A reload may name other .proto files.
		w.files = watchedFiles(cfg)
		w.stamps = fileStamps(w.files)
	}
}
