package protoreg

import (
	"fmt"
	"strings"

	"github.com/bufbuild/protocompile"
	"github.com/bufbuild/protocompile/linker"
	"github.com/bufbuild/protocompile/protoutil"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	// The files users' protos import most after the standard ones: the
	// google.api annotations (REST paths) and buf.validate rules. Their
	// generated packages put them in protoregistry.GlobalFiles, where
	// carried finds them.
	_ "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	_ "google.golang.org/genproto/googleapis/api/annotations"
)

// carriedPrefixes are the import paths below which Ferry answers imports
// from the descriptors compiled into it, when no import path holds the
// file.
var carriedPrefixes = []string{"google/api/", "buf/validate/"}

// carried resolves path from the descriptors compiled into Ferry when it
// lies below one of carriedPrefixes. It is consulted after the user's
// import paths, so a file the user ships wins.
func carried(path string) (protocompile.SearchResult, error) {
	for _, p := range carriedPrefixes {
		if strings.HasPrefix(path, p) {
			fd, err := protoregistry.GlobalFiles.FindFileByPath(path)
			if err != nil {
				return protocompile.SearchResult{}, err
			}
			return protocompile.SearchResult{Desc: fd}, nil
		}
	}
	return protocompile.SearchResult{}, protoregistry.NotFound
}

// relink rebuilds the compiled files and their imports with protodesc,
// decoding every option anew. protocompile leaves custom options as
// dynamic extension values, which proto.GetExtension with a generated
// extension type (annotations.E_Http, validate.E_Field) cannot read; after
// relink, an option whose extension Ferry has compiled in holds the
// generated type, and any other custom option stays dynamic. Files that
// came from the descriptors compiled into Ferry are kept as they are.
func relink(compiled linker.Files) ([]protoreflect.FileDescriptor, error) {
	var all linker.Files
	seen := map[string]bool{}
	var gather func(f linker.File)
	gather = func(f linker.File) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		imps := f.Imports()
		for i := 0; i < imps.Len(); i++ {
			if dep := f.FindImportByPath(imps.Get(i).Path()); dep != nil {
				gather(dep)
			}
		}
		all = append(all, f)
	}
	for _, f := range compiled {
		gather(f)
	}

	res := optionTypes{compiled: all.AsResolver()}
	files := new(protoregistry.Files)
	built := map[string]protoreflect.FileDescriptor{}
	// all lists each file after its imports, so each file's imports are
	// in files when it is built.
	for _, f := range all {
		fd, err := rebuild(f, res, files)
		if err != nil {
			return nil, err
		}
		if err := files.RegisterFile(fd); err != nil {
			return nil, fmt.Errorf("registering %s: %w", fd.Path(), err)
		}
		built[fd.Path()] = fd
	}
	out := make([]protoreflect.FileDescriptor, len(compiled))
	for i, f := range compiled {
		out[i] = built[f.Path()]
	}
	return out, nil
}

// unwrapper is a descriptor protocompile wrapped rather than compiled.
type unwrapper interface {
	Unwrap() protoreflect.FileDescriptor
}

// rebuild returns f as built by protodesc with its options decoded by res,
// or the compiled-in descriptor f wraps.
func rebuild(f linker.File, res optionTypes, files *protoregistry.Files) (protoreflect.FileDescriptor, error) {
	var inner protoreflect.FileDescriptor = f
	if u, ok := f.(unwrapper); ok {
		inner = u.Unwrap()
	}
	if g, err := protoregistry.GlobalFiles.FindFileByPath(f.Path()); err == nil && g == inner {
		return g, nil
	}
	b, err := proto.MarshalOptions{AllowPartial: true}.Marshal(protoutil.ProtoFromFileDescriptor(f))
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", f.Path(), err)
	}
	var fdp descriptorpb.FileDescriptorProto
	if err := (proto.UnmarshalOptions{AllowPartial: true, Resolver: res}).Unmarshal(b, &fdp); err != nil {
		return nil, fmt.Errorf("decoding the options of %s: %w", f.Path(), err)
	}
	fd, err := protodesc.NewFile(&fdp, files)
	if err != nil {
		return nil, fmt.Errorf("linking %s: %w", f.Path(), err)
	}
	return fd, nil
}

// optionTypes resolves the extensions in options: the generated type
// compiled into Ferry when it is the same extension (full name, extended
// message and number) as the one the user's files declare, else the
// user's files' dynamic type. Looking the number up in the user's files
// first keeps an unrelated compiled-in extension that happens to share a
// number from being decoded in its place.
type optionTypes struct {
	compiled linker.Resolver
}

// FindExtensionByName implements protoregistry.ExtensionTypeResolver.
func (r optionTypes) FindExtensionByName(field protoreflect.FullName) (protoreflect.ExtensionType, error) {
	xt, err := r.compiled.FindExtensionByName(field)
	if err != nil {
		return nil, err
	}
	return preferGenerated(xt), nil
}

// FindExtensionByNumber implements protoregistry.ExtensionTypeResolver.
func (r optionTypes) FindExtensionByNumber(message protoreflect.FullName, field protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	xt, err := r.compiled.FindExtensionByNumber(message, field)
	if err != nil {
		return nil, err
	}
	return preferGenerated(xt), nil
}

// FindMessageByName implements protoregistry.MessageTypeResolver, for
// google.protobuf.Any values in options.
func (r optionTypes) FindMessageByName(message protoreflect.FullName) (protoreflect.MessageType, error) {
	if mt, err := protoregistry.GlobalTypes.FindMessageByName(message); err == nil {
		return mt, nil
	}
	return r.compiled.FindMessageByName(message)
}

// FindMessageByURL implements protoregistry.MessageTypeResolver.
func (r optionTypes) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	if mt, err := protoregistry.GlobalTypes.FindMessageByURL(url); err == nil {
		return mt, nil
	}
	return r.compiled.FindMessageByURL(url)
}

func preferGenerated(xt protoreflect.ExtensionType) protoreflect.ExtensionType {
	xd := xt.TypeDescriptor()
	g, err := protoregistry.GlobalTypes.FindExtensionByName(xd.FullName())
	if err != nil {
		return xt
	}
	gd := g.TypeDescriptor()
	if gd.Number() != xd.Number() || gd.ContainingMessage().FullName() != xd.ContainingMessage().FullName() ||
		gd.Kind() != xd.Kind() || gd.Cardinality() != xd.Cardinality() || typeName(gd) != typeName(xd) {
		return xt
	}
	return g
}

// typeName returns the full name of fd's message or enum type, or "".
func typeName(fd protoreflect.FieldDescriptor) protoreflect.FullName {
	if md := fd.Message(); md != nil {
		return md.FullName()
	}
	if ed := fd.Enum(); ed != nil {
		return ed.FullName()
	}
	return ""
}
