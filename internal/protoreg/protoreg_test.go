package protoreg

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

func checkShop(t *testing.T, r *Registry) {
	t.Helper()
	for path, kind := range map[string][2]bool{
		"/shop.v1.Orders/Place":  {false, false},
		"/shop.v1.Orders/Watch":  {false, true},
		"/shop.v1.Orders/Upload": {true, false},
		"/shop.v1.Orders/Chat":   {true, true},
	} {
		m, ok := r.Method(path)
		if !ok {
			t.Errorf("method %s not found", path)
			continue
		}
		if m.ClientStreaming != kind[0] || m.ServerStreaming != kind[1] || m.Service != "shop.v1.Orders" {
			t.Errorf("%s = %+v, want client/server streaming %v", path, m, kind)
		}
	}
	if got := len(r.Match("shop.v1.Orders/*")); got != 4 {
		t.Errorf("Match(shop.v1.Orders/*) = %d methods, want 4", got)
	}
	if got := len(r.Match("shop.v1.Orders/Place")); got != 1 {
		t.Errorf("Match(Place) = %d", got)
	}
	if svcs := r.Services(); len(svcs) != 1 || svcs[0].FullName() != "shop.v1.Orders" {
		t.Errorf("services = %v, want only the listed file's shop.v1.Orders", svcs)
	}
	// Imports and well-known types resolve for reflection.
	if _, err := r.Files().FindDescriptorByName("google.protobuf.Timestamp"); err != nil {
		t.Error(err)
	}
}

func TestLoadFiles(t *testing.T) {
	r, err := Load(context.Background(), "testdata", []Source{{Files: []string{"shop.proto"}, ImportPaths: []string{".", "include"}}})
	if err != nil {
		t.Fatal(err)
	}
	checkShop(t, r)
}

// TestLoadDescriptorSet loads what `protoc --include_imports -o` writes.
func TestLoadDescriptorSet(t *testing.T) {
	r, err := Load(context.Background(), "testdata", []Source{{Files: []string{"shop.proto"}, ImportPaths: []string{".", "include"}}})
	if err != nil {
		t.Fatal(err)
	}
	var set descriptorpb.FileDescriptorSet
	r.Files().RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
		return true
	})
	// Dependencies first, as protoc writes them.
	sortDeps(set.File)
	b, err := proto.Marshal(&set)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "shop.pb"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	r2, err := Load(context.Background(), dir, []Source{{DescriptorSet: "shop.pb"}})
	if err != nil {
		t.Fatal(err)
	}
	checkShop(t, r2)
}

func sortDeps(files []*descriptorpb.FileDescriptorProto) {
	rank := map[string]int{}
	var depth func(name string) int
	byName := map[string]*descriptorpb.FileDescriptorProto{}
	for _, f := range files {
		byName[f.GetName()] = f
	}
	depth = func(name string) int {
		if d, ok := rank[name]; ok {
			return d
		}
		d := 0
		for _, dep := range byName[name].GetDependency() {
			d = max(d, depth(dep)+1)
		}
		rank[name] = d
		return d
	}
	for i := 1; i < len(files); i++ {
		for j := i; j > 0 && depth(files[j].GetName()) < depth(files[j-1].GetName()); j-- {
			files[j], files[j-1] = files[j-1], files[j]
		}
	}
}

func TestLoadErrors(t *testing.T) {
	testdata, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "bad.proto"), []byte("syntax = \"proto3\";\nmessage M {\n  int32 x = 1\n}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "junk.pb"), []byte("not a descriptor set"), 0o644)
	for _, tc := range []struct {
		src  Source
		want string
	}{
		{Source{Files: []string{"bad.proto"}}, "bad.proto:4:1"},
		{Source{Files: []string{"missing.proto"}}, "missing.proto"},
		{Source{Files: []string{"shop.proto"}, ImportPaths: []string{testdata}}, "shop/v1/types.proto"},
		{Source{DescriptorSet: "junk.pb"}, "decoding descriptor set"},
		{Source{DescriptorSet: "nope.pb"}, "reading descriptor set"},
	} {
		_, err := Load(context.Background(), dir, []Source{tc.src})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%+v) = %v, want an error containing %q", tc.src, err, tc.want)
		}
	}
}

// TestLoadAbsolutePaths loads files, import paths and descriptor sets named
// by absolute paths, from a base directory that holds none of them.
func TestLoadAbsolutePaths(t *testing.T) {
	testdata, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	shop := filepath.Join(testdata, "shop.proto")
	include := filepath.Join(testdata, "include")
	elsewhere := t.TempDir()
	for _, tc := range []struct {
		name string
		base string
		src  Source
	}{
		// The default import path, the base directory, is relative too.
		{"absolute file inside a relative import path", testdata, Source{Files: []string{shop}, ImportPaths: []string{".", "include"}}},
		{"absolute file inside an import path", elsewhere, Source{Files: []string{shop}, ImportPaths: []string{testdata, include}}},
		{"absolute file outside every import path", elsewhere, Source{Files: []string{shop}, ImportPaths: []string{include}}},
		{"relative file in an absolute import path", elsewhere, Source{Files: []string{"shop.proto"}, ImportPaths: []string{testdata, include}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Load(context.Background(), tc.base, []Source{tc.src})
			if err != nil {
				t.Fatal(err)
			}
			checkShop(t, r)
			if _, err := r.Files().FindFileByPath("shop.proto"); err != nil {
				t.Errorf("shop.proto is not registered under its import name: %v", err)
			}
		})
	}

	// A descriptor set named by an absolute path.
	r, err := Load(context.Background(), testdata, []Source{{Files: []string{"shop.proto"}, ImportPaths: []string{".", "include"}}})
	if err != nil {
		t.Fatal(err)
	}
	var set descriptorpb.FileDescriptorSet
	r.Files().RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
		return true
	})
	sortDeps(set.File)
	b, err := proto.Marshal(&set)
	if err != nil {
		t.Fatal(err)
	}
	pb := filepath.Join(t.TempDir(), "shop.pb")
	if err := os.WriteFile(pb, b, 0o644); err != nil {
		t.Fatal(err)
	}
	r2, err := Load(context.Background(), elsewhere, []Source{{DescriptorSet: pb}})
	if err != nil {
		t.Fatal(err)
	}
	checkShop(t, r2)
}
