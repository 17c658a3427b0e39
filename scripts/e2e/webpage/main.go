// Command webpage drives examples/web/index.html in a real headless
// Chromium (through its DevTools protocol, with chromedp): it serves the
// page from another origin than Ferry's, so CORS is exercised, checks that
// the page calls UnaryEcho and shows the reply, then writes records to the
// fan-out topic with a command (kcat in scripts/e2e/web.sh) and checks that
// the open page shows each of them.
//
//	go run ./scripts/e2e/webpage -chromium /usr/bin/chromium \
//	  -ferry http://127.0.0.1:7151 -produce 'kcat -b 127.0.0.1:9092 -t messages -P'
//
// It prints one line per check, "ok NAME" or "FAIL NAME: WHY", and exits
// non-zero when a check failed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
)

func main() {
	chromium := flag.String("chromium", "/usr/bin/chromium", "the Chromium binary")
	ferry := flag.String("ferry", "http://127.0.0.1:7151", "Ferry's gRPC port, as a URL")
	page := flag.String("page", "examples/web", "the folder of index.html")
	produce := flag.String("produce", "", "a shell command that writes the lines of its stdin as records of the fan-out topic")
	timeout := flag.Duration("timeout", 60*time.Second, "the time for every check together")
	flag.Parse()
	if err := run(*chromium, *ferry, *page, *produce, *timeout); err != nil {
		fmt.Println("FAIL", err)
		os.Exit(1)
	}
}

func run(chromium, ferry, dir, produce string, timeout time.Duration) error {
	// The page's own origin: another port than Ferry's.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("serving the page: %w", err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir)), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(lis)
	defer srv.Close()
	url := fmt.Sprintf("http://%s/index.html?ferry=%s", lis.Addr(), ferry)

	profile, err := os.MkdirTemp("", "ferry-webpage-chromium")
	if err != nil {
		return err
	}
	defer os.RemoveAll(profile)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(profile),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, timeout)
	defer cancel()

	err = chromedp.Do(ctx,
		chromedp.Navigate(url),
		chromedp.WaitVisible("#echo-button"),
		chromedp.SetValue("#echo-input", "hello from Chromium"),
		chromedp.Click("#echo-button"),
	)
	if err != nil {
		return fmt.Errorf("opening the page in %s: %w", chromium, err)
	}
	reply, err := chromedp.Run(ctx, chromedp.Poll[string](`document.getElementById("echo-reply").textContent || null`,
		chromedp.WithPollingTimeout(20*time.Second)))
	if err != nil || reply != "hello from Chromium" {
		return fmt.Errorf("unary echo: the page shows %q (%v)", reply, err)
	}
	fmt.Println("ok page calls UnaryEcho and shows the reply")

	want := []string{"first from kcat", "second from kcat", "third from kcat"}
	var lines strings.Builder
	for _, w := range want {
		fmt.Fprintf(&lines, "{\"message\":%q}\n", w)
	}
	if produce == "" {
		return errors.New("fan-out: no -produce command")
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", produce)
	cmd.Stdin = strings.NewReader(lines.String())
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("fan-out: %s: %w", produce, err)
	}
	var shown string
	js := `Array.from(document.querySelectorAll("#messages li")).map(li => li.textContent).join("|")`
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if shown, err = chromedp.Run(ctx, chromedp.Evaluate[string](js)); err != nil {
			return fmt.Errorf("fan-out: reading the page: %w", err)
		}
		if shown == strings.Join(want, "|") {
			fmt.Println("ok page receives the records written while it is open")
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	status, _ := chromedp.Run(ctx, chromedp.Text("#stream-status"))
	return fmt.Errorf("fan-out: the page shows %q (stream %q); want %q", shown, status, strings.Join(want, "|"))
}
