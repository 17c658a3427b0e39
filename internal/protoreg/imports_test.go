package protoreg

import (
	"context"
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestCarriedImports compiles a proto that imports google/api/annotations.proto
// and buf/validate/validate.proto without shipping them, and reads its options
// with the generated extension types, as vanguard and protovalidate do.
func TestCarriedImports(t *testing.T) {
	r, err := Load(context.Background(), "testdata/thirdparty", []Source{{Files: []string{"rest.proto"}}})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/rest.v1.Notes/Get":    "get /v1/notes/{id}",
		"/rest.v1.Notes/Create": "post /v1/notes",
	} {
		m, ok := r.Method(path)
		if !ok {
			t.Fatalf("method %s not found", path)
		}
		rule, ok := proto.GetExtension(m.Desc.Options(), annotations.E_Http).(*annotations.HttpRule)
		if !ok || rule == nil {
			t.Fatalf("%s: google.api.http = %T, want *annotations.HttpRule", path, proto.GetExtension(m.Desc.Options(), annotations.E_Http))
		}
		got := ""
		switch p := rule.GetPattern().(type) {
		case *annotations.HttpRule_Get:
			got = "get " + p.Get
		case *annotations.HttpRule_Post:
			got = "post " + p.Post
		}
		if got != want {
			t.Errorf("%s: http rule %v, want %s", path, rule, want)
		}
	}

	m, _ := r.Method("/rest.v1.Notes/Get")
	// The user's own custom option stays readable, as a dynamic extension.
	audit := ""
	m.Desc.Options().ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.FullName() == "rest.v1.audit" {
			audit = v.String()
		}
		return true
	})
	if audit != "reads" {
		t.Errorf("option rest.v1.audit = %q, want reads", audit)
	}
	id := m.Desc.Input().Fields().ByName("id")
	rules, ok := proto.GetExtension(id.Options(), validate.E_Field).(*validate.FieldRules)
	if !ok || rules.GetString().GetMinLen() != 1 {
		t.Errorf("buf.validate.field on GetNoteRequest.id = %v, want string.min_len 1", proto.GetExtension(id.Options(), validate.E_Field))
	}
	// The carried files are served by reflection like any import.
	if _, err := r.Files().FindFileByPath("google/api/http.proto"); err != nil {
		t.Error(err)
	}
}

// TestShippedImportWins checks that a google/api/annotations.proto the user
// ships on an import path is compiled instead of the carried one.
func TestShippedImportWins(t *testing.T) {
	r, err := Load(context.Background(), "testdata/thirdparty", []Source{{Files: []string{"rest.proto"}, ImportPaths: []string{".", "shipped"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Files().FindDescriptorByName("google.api.Shipped"); err != nil {
		t.Errorf("the shipped annotations.proto was not used: %v", err)
	}
	m, _ := r.Method("/rest.v1.Notes/Get")
	if rule, ok := proto.GetExtension(m.Desc.Options(), annotations.E_Http).(*annotations.HttpRule); !ok || rule.GetGet() != "/v1/notes/{id}" {
		t.Errorf("google.api.http = %v, want get /v1/notes/{id}", rule)
	}
}
