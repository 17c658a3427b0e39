// Package docs holds the tests that keep Ferry's design notes true to the
// code: every Go name and every path docs/DESIGN.md mentions must exist,
// and every long hand-written file must be explained there.
package docs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// maxLines is the length of a hand-written Go file past which DESIGN.md
// must say why it is not split.
const maxLines = 800

// decls are the names a Go tree declares: packages (by name, with the
// top-level names each declares) and types (by name, with their methods
// and fields).
type decls struct {
	pkgs  map[string]map[string]bool
	types map[string]map[string]bool
}

func readDecls(t *testing.T, root string) decls {
	t.Helper()
	d := decls{pkgs: map[string]map[string]bool{}, types: map[string]map[string]bool{}}
	members := func(m map[string]map[string]bool, name string) map[string]bool {
		if m[name] == nil {
			m[name] = map[string]bool{}
		}
		return m[name]
	}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		top := members(d.pkgs, f.Name.Name)
		for _, decl := range f.Decls {
			switch decl := decl.(type) {
			case *ast.FuncDecl:
				if decl.Recv == nil {
					top[decl.Name.Name] = true
					continue
				}
				members(d.types, recvType(decl.Recv.List[0].Type))[decl.Name.Name] = true
			case *ast.GenDecl:
				for _, spec := range decl.Specs {
					switch spec := spec.(type) {
					case *ast.TypeSpec:
						top[spec.Name.Name] = true
						ms := members(d.types, spec.Name.Name)
						if st, ok := spec.Type.(*ast.StructType); ok {
							for _, fl := range st.Fields.List {
								for _, n := range fl.Names {
									ms[n.Name] = true
								}
								if len(fl.Names) == 0 { // embedded
									ms[recvType(fl.Type)] = true
								}
							}
						}
						if it, ok := spec.Type.(*ast.InterfaceType); ok {
							for _, m := range it.Methods.List {
								for _, n := range m.Names {
									ms[n.Name] = true
								}
							}
						}
					case *ast.ValueSpec:
						for _, n := range spec.Names {
							top[n.Name] = true
						}
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// recvType is the name of a receiver or embedded type: T, *T, T[P], pkg.T.
func recvType(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.StarExpr:
		return recvType(e.X)
	case *ast.IndexExpr:
		return recvType(e.X)
	case *ast.IndexListExpr:
		return recvType(e.X)
	case *ast.SelectorExpr:
		return e.Sel.Name
	case *ast.Ident:
		return e.Name
	}
	return ""
}

var (
	codeSpan = regexp.MustCompile("`([^`\n]+)`")
	// goName is a qualified Go name as DESIGN.md writes one: pkg.Name,
	// Type.Method, pkg.Type.Method, possibly with a call's parentheses.
	goName = regexp.MustCompile(`^([A-Za-z_]\w*)\.([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*))?(?:\(\))?$`)
	// qualified is a qualified name inside a diagram.
	qualified = regexp.MustCompile(`\b([a-z]\w*)\.([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*))?`)
	// pkgPath is a Go file named by its package's directory under
	// internal/.
	pkgPath = regexp.MustCompile(`^[a-z]+/[\w/]*\.go$`)
	// configKey is a configuration key's last part (fetch.catch_up_wait):
	// Ferry's Go names have no underscores.
	configKey = regexp.MustCompile(`^[a-z0-9]+(_[a-z0-9]+)+$`)
	// repoPath is a path in the repository: a directory or a Go file.
	repoPath = regexp.MustCompile(`^(?:internal|cmd|api|scripts|examples|docs)/[\w./-]*$`)
)

// TestDesignNamesExist fails when DESIGN.md names a Ferry package's
// declaration, a method or field of a Ferry type, or a path that does not
// exist, so the design notes cannot drift from the code unnoticed.
func TestDesignNamesExist(t *testing.T) {
	d := readDecls(t, "..")
	text, err := os.ReadFile("DESIGN.md")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	fenced := false
	for i, line := range strings.Split(string(text), "\n") {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
			continue
		}
		spans := codeSpan.FindAllStringSubmatch(line, -1)
		if fenced {
			// Diagrams name Ferry's functions as pkg.Name(.Method).
			spans = nil
			for _, m := range qualified.FindAllStringSubmatch(line, -1) {
				if d.pkgs[m[1]] != nil && !fileExt[m[2]] {
					spans = append(spans, []string{m[0], m[0]})
				}
			}
		}
		for _, m := range spans {
			span := strings.TrimSpace(m[1])
			if repoPath.MatchString(span) || pkgPath.MatchString(span) {
				checked++
				path := filepath.Join("..", strings.TrimSuffix(span, "/"))
				if !repoPath.MatchString(span) {
					path = filepath.Join("..", "internal", span) // grpcserver/server.go
				}
				if _, err := os.Stat(path); err != nil {
					t.Errorf("DESIGN.md:%d: path %s does not exist", i+1, span)
				}
				continue
			}
			g := goName.FindStringSubmatch(span)
			if g == nil || configKey.MatchString(g[2]) || fileExt[g[2]] && g[3] == "" {
				continue
			}
			if why := d.missing(g[1], g[2], g[3]); why != "" {
				t.Errorf("DESIGN.md:%d: `%s`: %s", i+1, span, why)
			}
			if d.pkgs[g[1]] != nil || d.types[g[1]] != nil {
				checked++
			}
		}
	}
	if checked < 50 {
		t.Errorf("only %d names and paths of DESIGN.md were checked: is the pattern still right?", checked)
	}
}

// fileExt are the endings of file names a diagram may show (kafka.sh).
var fileExt = map[string]bool{"sh": true, "go": true, "md": true, "yaml": true, "py": true, "proto": true}

// external are the capitalized qualifiers DESIGN.md may use that are not
// Ferry's types: outside packages named by their types' usual variables.
var external = map[string]bool{}

// missing says why a.b(.c) names nothing in the tree, or "" when it does or
// when a is not one of Ferry's packages or types (kgo.Client, grpc.Server).
func (d decls) missing(a, b, c string) string {
	if top, ok := d.pkgs[a]; ok {
		if !top[b] {
			return "package " + a + " declares no " + b
		}
		if c != "" && !d.types[b][c] {
			return "type " + a + "." + b + " has no method or field " + c
		}
		return ""
	}
	ms, ok := d.types[a]
	switch {
	case !ok && a[0] >= 'A' && a[0] <= 'Z' && !external[a]:
		return "no type " + a + " is declared"
	case !ok || c != "":
		return "" // not Ferry's, or a field's own method: not resolved
	case !ms[b]:
		return "type " + a + " has no method or field " + b
	}
	return ""
}

// TestLongFilesExplained fails when a hand-written Go file is longer than
// maxLines and DESIGN.md does not name it with its reason.
func TestLongFilesExplained(t *testing.T) {
	text, err := os.ReadFile("DESIGN.md")
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir("..", func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, ".pb.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if n := strings.Count(string(b), "\n"); n > maxLines {
			rel, _ := filepath.Rel("..", path)
			if !strings.Contains(string(text), "`"+filepath.ToSlash(rel)+"`") {
				t.Errorf("%s has %d lines: split it, or say in DESIGN.md (naming `%s`) why it is one file", rel, n, filepath.ToSlash(rel))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
