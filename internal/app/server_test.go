package app_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// TestReflectionAndHealth: reflection lists the configured services and
// serves their descriptors (grpcurl needs no -proto), and health answers
// for the server and each service.
func TestReflectionAndHealth(t *testing.T) {
	kit.CheckLeaks(t)
	a := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s}
`, kit.Topic(t, 1, nil)))
	cc, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testkit.Context(t, 10*time.Second)

	s, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		names = append(names, svc.GetName())
	}
	sort.Strings(names)
	want := []string{"example.FanoutService", "grpc.examples.echo.Echo", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("services = %v, want %v", names, want)
	}
	if err := s.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "grpc.examples.echo.Echo"}}); err != nil {
		t.Fatal(err)
	}
	resp, err = s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if fds := resp.GetFileDescriptorResponse().GetFileDescriptorProto(); len(fds) == 0 {
		t.Errorf("no descriptor for grpc.examples.echo.Echo: %v", resp)
	}
	s.CloseSend()

	hc := healthpb.NewHealthClient(cc)
	for _, svc := range []string{"", "grpc.examples.echo.Echo"} {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q = %v, %v; want SERVING", svc, r.GetStatus(), err)
		}
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "no.Such"}); status.Code(err) != codes.NotFound {
		t.Errorf("health of an unknown service = %v, want NotFound", err)
	}
}

// TestCLI runs the ferry command's validate and version.
func TestCLI(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "protos: [{files: [echo.proto]}]\nroutes:\n  - when: [{method: x}]\n    produce: {topic: t, acks: all}\n")
	var out, errOut bytes.Buffer
	if code := app.Main([]string{"validate", "-c", bad}, &out, &errOut); code != 1 {
		t.Errorf("validate of a bad file exited %d, want 1", code)
	}
	for _, want := range []string{
		bad + `:3: routes[0].when[0].method: "x" is not a method`,
		bad + `:4: routes[0].produce.acks: "all" is not an acks mode`,
	} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("validate printed\n%s\nwant a line with\n%s", errOut.String(), want)
		}
	}

	good := filepath.Join(root(t), "examples", "echo", "ferry.yaml")
	out.Reset()
	errOut.Reset()
	if code := app.Main([]string{"validate", "-c", good}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "configuration is valid") {
		t.Errorf("validate of the echo example exited %d: %s%s", code, out.String(), errOut.String())
	}
	out.Reset()
	if code := app.Main([]string{"version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "ferry ") {
		t.Errorf("version exited %d: %q", code, out.String())
	}
	if code := app.Main([]string{"bogus"}, &out, &errOut); code != 2 {
		t.Errorf("an unknown command exited %d, want 2", code)
	}
	if code := app.Main([]string{"validate", "-c", filepath.Join(dir, "missing.yaml")}, &out, &errOut); code != 1 {
		t.Errorf("validate of a missing file exited %d, want 1", code)
	}
	_ = os.Remove(bad)
}
