package faults_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is one process of a scenario (a Ferry front end or back end, the
// echo server) that the test can signal, kill and start again with the
// same command. Its output goes to a file in the scenario's directory,
// shown when the test fails.
type proc struct {
	t       testing.TB
	name    string
	args    []string
	env     []string
	ready   *regexp.Regexp
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// startProc starts args[0] with args[1:] and env added to the test's, and
// waits until a line of its output matches ready; it returns the process
// and the match's first group (if any).
func startProc(t testing.TB, dir, name string, ready *regexp.Regexp, env []string, args ...string) (*proc, string) {
	t.Helper()
	p := &proc{t: t, name: name, args: args, env: env, ready: ready, logPath: dir + "/" + name + ".log"}
	got := p.start()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			out, _ := os.ReadFile(p.logPath)
			if len(out) > 8000 {
				out = append([]byte("…"), out[len(out)-8000:]...)
			}
			t.Logf("output of %s:\n%s", p.name, out)
		}
	})
	return p, got
}

// start runs the command once more and waits for its ready line.
func (p *proc) start() string {
	p.t.Helper()
	f, err := os.OpenFile(p.logPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	fmt.Fprintf(f, "=== %s: starting %s\n", time.Now().Format(time.TimeOnly), p.name)
	w := &readyWriter{f: f, want: p.ready, found: make(chan string, 1)}
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("starting %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	select {
	case m := <-w.found:
		return m
	case <-done:
		out, _ := os.ReadFile(p.logPath)
		p.t.Fatalf("%s exited before it was ready:\n%s", p.name, out)
	case <-time.After(60 * time.Second):
		p.t.Fatalf("%s not ready within 60s", p.name)
	}
	return ""
}

// signal sends sig to the running process.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("sending %v to %s: %v", sig, p.name, err)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.t.Helper()
	p.signal(syscall.SIGKILL)
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	<-done
}

// stop ends the process if it still runs: SIGCONT (it may be stopped),
// SIGTERM for a clean shutdown, SIGKILL if that takes over 20 seconds.
func (p *proc) stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// readyWriter copies a process's output to its log file and reports the
// first line that matches want. exec.Cmd calls Write from one goroutine at
// a time, since stdout and stderr share it.
type readyWriter struct {
	f       *os.File
	want    *regexp.Regexp
	pending []byte
	found   chan string
}

func (w *readyWriter) Write(b []byte) (int, error) {
	if w.want != nil {
		w.pending = append(w.pending, b...)
		for {
			i := bytes.IndexByte(w.pending, '\n')
			if i < 0 {
				break
			}
			line := w.pending[:i]
			w.pending = w.pending[i+1:]
			if m := w.want.FindSubmatch(line); m != nil {
				got := ""
				if len(m) > 1 {
					got = string(m[1])
				}
				w.found <- got
				w.want, w.pending = nil, nil
				break
			}
		}
	}
	return w.f.Write(b)
}
