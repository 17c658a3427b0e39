package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is one problem with a configuration file, located by line and YAML
// path.
type Error struct {
	File string
	Line int
	Path string
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	if e.Path != "" {
		b.WriteString(": " + e.Path)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// Errors is every problem found in one pass, in file order.
type Errors []*Error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// sorted returns es ordered by line, then path, so output reads top to
// bottom like the file.
func (es Errors) sorted() Errors {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Line != es[j].Line {
			return es[i].Line < es[j].Line
		}
		return es[i].Path < es[j].Path
	})
	return es
}

// Load reads, decodes and validates the configuration file at path. A
// non-nil error is an Errors listing every problem found.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Errors{{File: path, Msg: fmt.Sprintf("reading config: %v", err)}}
	}
	return Parse(path, data)
}

// Parse decodes and validates a configuration read from file. Decoding is
// strict: an unknown key is an error. ${NAME} and ${NAME:-default} in values
// are replaced by environment variables; $$ is a literal $.
func Parse(file string, data []byte) (*Config, error) {
	cfg := Default()
	cfg.file = file
	cfg.lines = map[string]int{}

	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, Errors{yamlError(file, err)}
	}
	if len(doc.Content) == 0 {
		// An empty file is a config of defaults, which still has to validate.
		cfg.applyDefaults()
		if errs := cfg.Validate(); len(errs) > 0 {
			return nil, errs
		}
		return &cfg, nil
	}
	root := doc.Content[0]

	var errs Errors
	errs = append(errs, expandEnv(file, root)...)
	errs = append(errs, checkKeys(file, root, reflect.TypeOf(cfg), "", cfg.lines)...)
	if len(errs) > 0 {
		return nil, errs.sorted()
	}
	if err := root.Decode(&cfg); err != nil {
		e := yamlError(file, err)
		e.Path = cfg.pathAt(e.Line)
		return nil, Errors{e}
	}
	cfg.applyDefaults()
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errs
	}
	return &cfg, nil
}

// yamlError turns a yaml.v3 error, whose messages carry "line N: ..." in
// their text, into an Error with the line split out.
func yamlError(file string, err error) *Error {
	var te *yaml.TypeError
	msg := err.Error()
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	e := &Error{File: file, Msg: msg}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, tail, ok := strings.Cut(rest, ":"); ok {
			if line, err := strconv.Atoi(n); err == nil {
				e.Line = line
				e.Msg = strings.TrimSpace(tail)
			}
		}
	}
	return e
}

// pathAt returns the YAML path of the value written on line, so that a
// decoding error (a number too large for its key, a duration that does not
// parse) names the key. When several keys share the line, as in a flow
// mapping {topic: t, timeout: soon}, it returns the mapping they share.
func (c *Config) pathAt(line int) string {
	var onLine, leaves []string
	for p, l := range c.lines {
		if l == line {
			onLine = append(onLine, p)
		}
	}
	for _, p := range onLine {
		leaf := true
		for _, q := range onLine {
			if strings.HasPrefix(q, p+".") || strings.HasPrefix(q, p+"[") {
				leaf = false
				break
			}
		}
		if leaf {
			leaves = append(leaves, p)
		}
	}
	if len(leaves) == 0 {
		return ""
	}
	common := leaves[0]
	for _, p := range leaves[1:] {
		for common != "" && p != common && !strings.HasPrefix(p, common+".") && !strings.HasPrefix(p, common+"[") {
			i := strings.LastIndexAny(common, ".[")
			if i < 0 {
				common = ""
				break
			}
			common = common[:i]
		}
	}
	return common
}

// expandEnv replaces environment references in every scalar value below n.
func expandEnv(file string, n *yaml.Node) Errors {
	var errs Errors
	switch n.Kind {
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "$") {
			return nil
		}
		v, err := expand(n.Value, lookupEnv)
		if err != nil {
			return Errors{{File: file, Line: n.Line, Msg: err.Error()}}
		}
		n.Value = v
		if n.Style == 0 {
			// A plain scalar's type is resolved from its text, so let
			// "${PORT}" become an int once it reads "9092".
			n.Tag = ""
		}
	default:
		for _, c := range n.Content {
			errs = append(errs, expandEnv(file, c)...)
		}
	}
	return errs
}

// lookupEnv looks up an environment variable. HOSTNAME, which shells set
// without exporting it, falls back to the host's name, so that
// ${HOSTNAME} names an instance wherever Ferry runs.
func lookupEnv(name string) (string, bool) {
	v, ok := os.LookupEnv(name)
	if !ok && name == "HOSTNAME" {
		if h, err := os.Hostname(); err == nil && h != "" {
			return h, true
		}
	}
	return v, ok
}

// expand replaces ${NAME}, ${NAME:-default} and $$ in s.
func expand(s string, lookup func(string) (string, bool)) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '{':
		default:
			b.WriteByte(c)
			continue
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			return "", fmt.Errorf("unterminated ${ in %q: close it with } or write $$ for a literal $", s)
		}
		ref := s[i+2 : i+2+end]
		name, def, hasDef := strings.Cut(ref, ":-")
		if !validEnvName(name) {
			return "", fmt.Errorf("invalid environment variable name %q in %q", name, s)
		}
		v, ok := lookup(name)
		switch {
		case ok && (v != "" || !hasDef):
			b.WriteString(v)
		case hasDef:
			b.WriteString(def)
		default:
			return "", fmt.Errorf("environment variable %s is not set: set it, or write ${%s:-default} to give a default", name, name)
		}
		i += 2 + end
	}
	return b.String(), nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		ok := r == '_' || (r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z') || (i > 0 && r >= '0' && r <= '9')
		if !ok {
			return false
		}
	}
	return true
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// checkKeys walks n alongside the Go type t, reporting every mapping key that
// t does not have and recording the line of every path in lines.
func checkKeys(file string, n *yaml.Node, t reflect.Type, path string, lines map[string]int) Errors {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if _, ok := lines[path]; !ok {
		lines[path] = n.Line
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	var errs Errors
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil // the decoder reports the type mismatch
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			lines[p] = k.Line
			f, ok := fields[k.Value]
			if !ok {
				errs = append(errs, &Error{File: file, Line: k.Line, Path: p, Msg: unknownKeyMsg(k.Value, fields)})
				continue
			}
			errs = append(errs, checkKeys(file, v, f, p, lines)...)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return nil
		}
		for i, c := range n.Content {
			errs = append(errs, checkKeys(file, c, t.Elem(), path+"["+strconv.Itoa(i)+"]", lines)...)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			lines[p] = k.Line
			errs = append(errs, checkKeys(file, v, t.Elem(), p, lines)...)
		}
	}
	return errs
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlFields maps the YAML keys of struct type t to their field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		m[name] = f.Type
	}
	return m
}

func unknownKeyMsg(key string, fields map[string]reflect.Type) string {
	known := make([]string, 0, len(fields))
	for k := range fields {
		known = append(known, k)
	}
	sort.Strings(known)
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf("unknown key %q: did you mean %q?", key, best)
	}
	return fmt.Sprintf("unknown key %q: known keys here are %s", key, strings.Join(known, ", "))
}

// editDistance is the Levenshtein distance, for "did you mean" hints.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Header is one Kafka header name and value.
type Header struct {
	Name  string
	Value string
}

// Headers is an ordered list of headers written in YAML as a mapping, whose
// order is kept: Kafka header order is part of the record layout.
type Headers []Header

// UnmarshalYAML keeps the mapping's order.
func (h *Headers) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: expected a mapping of header name to value", n.Line)
	}
	out := make(Headers, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: header %q: expected a text value", v.Line, k.Value)
		}
		out = append(out, Header{Name: k.Value, Value: v.Value})
	}
	*h = out
	return nil
}
