// Package protoreg loads the service definitions Ferry serves from .proto
// files, compiled at start-up with protocompile, and from descriptor sets
// written by `protoc -o` or `buf build`. It answers which methods exist and
// what kind of RPC each is, and resolves descriptors for server reflection.
package protoreg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// Source is one place service definitions come from: Files compiled with
// ImportPaths, or a DescriptorSet file.
type Source struct {
	Files         []string
	ImportPaths   []string
	DescriptorSet string
}

// Method is one RPC method Ferry can serve.
type Method struct {
	// Path is the gRPC method path, "/package.Service/Method".
	Path string
	// Service is the full service name, "package.Service".
	Service string
	// Name is the method name, "Method".
	Name string
	// ClientStreaming and ServerStreaming give the declared RPC kind.
	ClientStreaming bool
	ServerStreaming bool
	// Desc is the method's descriptor.
	Desc protoreflect.MethodDescriptor
}

// Registry holds the loaded definitions. It is read-only after Load, so it
// is safe for concurrent use.
type Registry struct {
	files    *protoregistry.Files
	services []protoreflect.ServiceDescriptor
	methods  map[string]*Method
}

// Load compiles and reads every source. Relative paths are taken from
// baseDir. The error names each source that failed, and protocompile's
// errors name the .proto file, line and column.
func Load(ctx context.Context, baseDir string, sources []Source) (*Registry, error) {
	r := &Registry{files: new(protoregistry.Files), methods: map[string]*Method{}}
	var errs []error
	served := map[string]bool{} // files whose services are served
	for i, s := range sources {
		var fds []protoreflect.FileDescriptor
		var err error
		if s.DescriptorSet != "" {
			fds, err = readDescriptorSet(abs(baseDir, s.DescriptorSet))
		} else {
			fds, err = compile(ctx, baseDir, s)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("protos[%d]: %w", i, err))
			continue
		}
		for _, fd := range fds {
			served[fd.Path()] = true
			if err := r.register(fd); err != nil {
				errs = append(errs, fmt.Errorf("protos[%d]: %w", i, err))
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	r.files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if !served[fd.Path()] {
			return true
		}
		svcs := fd.Services()
		for i := 0; i < svcs.Len(); i++ {
			sd := svcs.Get(i)
			r.services = append(r.services, sd)
			ms := sd.Methods()
			for j := 0; j < ms.Len(); j++ {
				md := ms.Get(j)
				m := &Method{
					Path:            "/" + string(sd.FullName()) + "/" + string(md.Name()),
					Service:         string(sd.FullName()),
					Name:            string(md.Name()),
					ClientStreaming: md.IsStreamingClient(),
					ServerStreaming: md.IsStreamingServer(),
					Desc:            md,
				}
				r.methods[m.Path] = m
			}
		}
		return true
	})
	sort.Slice(r.services, func(i, j int) bool { return r.services[i].FullName() < r.services[j].FullName() })
	return r, nil
}

// register adds fd and, first, its imports. A file already registered under
// the same path (a shared import such as google/protobuf/empty.proto) is
// kept once.
func (r *Registry) register(fd protoreflect.FileDescriptor) error {
	if _, err := r.files.FindFileByPath(fd.Path()); err == nil {
		return nil
	}
	imps := fd.Imports()
	for i := 0; i < imps.Len(); i++ {
		if err := r.register(imps.Get(i).FileDescriptor); err != nil {
			return err
		}
	}
	if err := r.files.RegisterFile(fd); err != nil {
		return fmt.Errorf("registering %s: %w", fd.Path(), err)
	}
	return nil
}

func compile(ctx context.Context, baseDir string, s Source) ([]protoreflect.FileDescriptor, error) {
	imports := s.ImportPaths
	if len(imports) == 0 {
		imports = []string{"."}
	}
	paths := make([]string, len(imports))
	for i, p := range imports {
		paths[i] = abs(baseDir, p)
	}
	files, paths := importNames(s.Files, paths)
	c := protocompile.Compiler{
		// The user's import paths first, then the standard imports, then
		// the third-party files Ferry carries (see carried).
		Resolver: protocompile.CompositeResolver{
			protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: paths}),
			protocompile.ResolverFunc(carried),
		},
		// Comments are kept so reflection clients can show them.
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	compiled, err := c.Compile(ctx, files...)
	if err != nil {
		return nil, fmt.Errorf("compiling %s (import paths %s): %w", strings.Join(s.Files, ", "), strings.Join(paths, ", "), err)
	}
	out, err := relink(compiled)
	if err != nil {
		return nil, fmt.Errorf("compiling %s: %w", strings.Join(s.Files, ", "), err)
	}
	return out, nil
}

// importNames returns the names files are compiled under, and the import
// paths to compile them with. A relative file is named as written, relative
// to an import path. The compiler joins every name to each import path, so
// an absolute file would be looked for below them (/tmp/x/tmp/x/a.proto):
// it is named relative to the first import path that holds it instead, or,
// when none does, by its base name in its own directory, which is added to
// the import paths (so that files beside it can be imported too).
func importNames(files, paths []string) ([]string, []string) {
	names := make([]string, len(files))
	for i, f := range files {
		if !filepath.IsAbs(f) {
			names[i] = f
			continue
		}
		f = filepath.Clean(f)
		names[i] = ""
		for _, p := range paths {
			if rel, err := filepath.Rel(p, f); err == nil && filepath.IsLocal(rel) {
				names[i] = filepath.ToSlash(rel)
				break
			}
		}
		if names[i] == "" {
			paths = append(paths, filepath.Dir(f))
			names[i] = filepath.Base(f)
		}
	}
	return names, paths
}

func readDescriptorSet(path string) ([]protoreflect.FileDescriptor, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading descriptor set: %w", err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("decoding descriptor set %s (write it with protoc -o or buf build): %w", path, err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, fmt.Errorf("linking descriptor set %s (protoc needs --include_imports): %w", path, err)
	}
	var out []protoreflect.FileDescriptor
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		out = append(out, fd)
		return true
	})
	return out, nil
}

func abs(base, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(base, p)
}

// Method returns the method with gRPC path "/package.Service/Method".
func (r *Registry) Method(path string) (*Method, bool) {
	m, ok := r.methods[path]
	return m, ok
}

// Match returns the methods a route pattern "package.Service/Method" or
// "package.Service/*" names, sorted by path.
func (r *Registry) Match(pattern string) []*Method {
	svc, name, _ := strings.Cut(pattern, "/")
	var out []*Method
	for _, m := range r.methods {
		if m.Service == svc && (name == "*" || name == m.Name) {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Services returns the served services, sorted by name.
func (r *Registry) Services() []protoreflect.ServiceDescriptor { return r.services }

// Files returns the loaded files, for descriptor lookups.
func (r *Registry) Files() *protoregistry.Files { return r.files }
