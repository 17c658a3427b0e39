package app

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestInFlight: stop refuses new calls, and its channel closes once the
// calls running have left.
func TestInFlight(t *testing.T) {
	f := newInFlight()
	for range 2 {
		if !f.enter() {
			t.Fatal("enter refused before stop")
		}
	}
	idle := f.stop()
	if f.enter() {
		t.Fatal("enter accepted after stop")
	}
	f.leave()
	select {
	case <-idle:
		t.Fatal("idle with a call running")
	default:
	}
	f.leave()
	<-idle
	if again := f.stop(); again != idle {
		t.Error("a second stop returned another channel")
	}
}

// TestCountHTTP: once Close began, an HTTP request gets 503 with the
// reason and its connection is closed; before, it is served.
func TestCountHTTP(t *testing.T) {
	a := &App{calls: newInFlight()}
	h := a.countHTTP(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/topics", nil))
	if w.Code != http.StatusNoContent {
		t.Fatalf("before the stop: %d, want 204", w.Code)
	}
	a.calls.stop()
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/topics", nil))
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), stoppingMessage) || w.Header().Get("Connection") != "close" {
		t.Errorf("while stopping: %d %q %v; want 503 with the reason, connection closed", w.Code, w.Body.String(), w.Header())
	}
	if !a.Stopping() {
		t.Error("Stopping is false after the stop began")
	}
}
