package config

import (
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// configDoc is the configuration reference the tests below keep honest.
const configDoc = "../../docs/CONFIG.md"

// docKeyPaths returns every key path of the Config type, in the syntax the
// reference uses: top-level keys plain ("replies.lookback"), list items
// with "[]" ("routes[].when[].metadata"). Maps and types that decode
// themselves (yaml.Unmarshaler, such as Headers) are keys whose insides
// are not walked.
func docKeyPaths(t *testing.T) []string {
	t.Helper()
	var paths []string
	var walk func(typ reflect.Type, prefix string)
	walk = func(typ reflect.Type, prefix string) {
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		if reflect.PointerTo(typ).Implements(unmarshalerType) {
			return
		}
		switch typ.Kind() {
		case reflect.Slice, reflect.Array:
			walk(typ.Elem(), prefix+"[]")
		case reflect.Struct:
			for i := 0; i < typ.NumField(); i++ {
				f := typ.Field(i)
				if !f.IsExported() {
					continue
				}
				name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				if name == "-" {
					continue
				}
				if strings.Contains(","+opts+",", ",inline,") {
					walk(f.Type, prefix)
					continue
				}
				if name == "" {
					t.Errorf("field %s.%s has no yaml tag: give it one so its key is documented", typ.Name(), f.Name)
					continue
				}
				p := name
				if prefix != "" {
					p = prefix + "." + name
				}
				paths = append(paths, p)
				walk(f.Type, p)
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	sort.Strings(paths)
	return paths
}

// topLevelKeys returns the YAML keys of Config itself.
func topLevelKeys() []string {
	var keys []string
	for k := range yamlFields(reflect.TypeOf(Config{})) {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var (
	fencedBlock = regexp.MustCompile("(?ms)^```.*?^```[ \t]*$")
	codeSpan    = regexp.MustCompile("`([^`\n]+)`")
	keyPathLike = regexp.MustCompile(`^[a-z][a-z0-9_]*(\[\])?(\.[a-z][a-z0-9_]*(\[\])?)*$`)
)

// docProse returns CONFIG.md without its fenced code blocks, so a key
// counts as documented only where the prose or a table describes it.
func docProse(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatalf("reading the configuration reference: %v", err)
	}
	return fencedBlock.ReplaceAllString(string(b), "")
}

func TestEveryKeyDocumented(t *testing.T) {
	paths := docKeyPaths(t)
	// The walk itself must see through slices, pointers and nesting, and
	// stop at maps and self-decoding types.
	known := map[string]bool{}
	for _, p := range paths {
		known[p] = true
	}
	for _, p := range []string{
		"clusters", "clusters[].producer.linger", "embedded.port",
		"listeners.grpc.address", "protos[].import_paths", "routes[].when[].metadata",
		"routes[].produce.overrides", "routes[].produce.one_way_ack",
		"routes[].produce.header_names.status", "replies.lookback", "log.format",
	} {
		if !known[p] {
			t.Errorf("key walk missed %s; it found %v", p, paths)
		}
	}
	for _, p := range paths {
		if strings.HasPrefix(p, "routes[].produce.overrides.") || strings.HasPrefix(p, "routes[].when[].metadata.") {
			t.Errorf("key walk went inside a map or Headers: %s", p)
		}
	}

	doc := docProse(t)
	var missing []string
	for _, p := range paths {
		if !strings.Contains(doc, "`"+p+"`") {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%s does not document these keys (write each as `path` in its section):\n  %s",
			configDoc, strings.Join(missing, "\n  "))
	}

	// Reverse: every key path the reference names must exist, so it cannot
	// describe keys Ferry does not have.
	tops := topLevelKeys()
	var unknown []string
	seen := map[string]bool{}
	for _, m := range codeSpan.FindAllStringSubmatch(doc, -1) {
		tok := m[1]
		if seen[tok] || !keyPathLike.MatchString(tok) {
			continue
		}
		seen[tok] = true
		top := false
		for _, k := range tops {
			if tok == k || strings.HasPrefix(tok, k+".") || strings.HasPrefix(tok, k+"[]") {
				top = true
				break
			}
		}
		if top && !known[tok] {
			unknown = append(unknown, tok)
		}
	}
	if len(unknown) > 0 {
		t.Errorf("%s names key paths the Config type does not have:\n  %s", configDoc, strings.Join(unknown, "\n  "))
	}
}

// TestDocExample checks that the reference's complete example, its last
// YAML block, is a valid configuration that sets every key (or, for a key
// that cannot go with the others, shows it in a comment).
func TestDocExample(t *testing.T) {
	b, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?ms)^```yaml\n(.*?)^```").FindAllStringSubmatch(string(b), -1)
	if len(blocks) == 0 {
		t.Fatalf("%s has no yaml example", configDoc)
	}
	example := blocks[len(blocks)-1][1]
	t.Setenv("KAFKA_BROKERS", "") // the example's broker list falls back to none
	cfg, err := Parse("CONFIG.md example", []byte(example))
	if err != nil {
		t.Fatalf("the complete example does not load:\n%v", err)
	}
	index := regexp.MustCompile(`\[[0-9]+\]`)
	set := map[string]bool{}
	for p := range cfg.lines {
		set[index.ReplaceAllString(p, "[]")] = true
	}
	// Keys that exclude a key the example sets are shown in a comment.
	commented := map[string]string{"protos[].descriptor_set": "# - descriptor_set:"}
	// TLS and SASL need a real broker; the example's cluster may be the
	// embedded one. A back end's and a source's TLS files must exist.
	for _, k := range []string{"tls", "tls.enabled", "tls.ca_file", "tls.cert_file", "tls.key_file", "tls.server_name",
		"tls.insecure_skip_verify", "sasl", "sasl.mechanism", "sasl.username", "sasl.password"} {
		commented["clusters[]."+k] = "# " + strings.Repeat("  ", strings.Count(k, ".")) + k[strings.LastIndex(k, ".")+1:] + ":"
		commented["backends[]."+k] = commented["clusters[]."+k]
		commented["sources[]."+k] = commented["clusters[]."+k]
	}
	commented["clusters[].sasl.password_file"] = "# or password_file:"
	commented["clusters[].sasl.token_file"] = "# or token_file:"
	// The embedded broker's TLS needs certificate files; its SASL goes
	// with it in the example.
	for _, k := range []string{"tls", "tls.cert_file", "tls.key_file", "sasl", "sasl.mechanism", "sasl.username", "sasl.password"} {
		commented["embedded."+k] = "# " + strings.Repeat("  ", strings.Count(k, ".")) + k[strings.LastIndex(k, ".")+1:] + ":"
	}
	for _, k := range []string{"sasl.token", "sasl.extensions", "sasl.aws", "sasl.aws.access_key_id", "sasl.aws.secret_access_key", "sasl.aws.session_token"} {
		commented["clusters[]."+k] = "# " + strings.Repeat("  ", strings.Count(k, ".")) + k[strings.LastIndex(k, ".")+1:] + ":"
	}
	// The listeners' TLS needs certificate files.
	for _, l := range []string{"listeners.grpc.", "listeners.http."} {
		for _, k := range []string{"tls", "tls.cert_file", "tls.key_file", "tls.min_version", "tls.client_auth", "tls.client_ca_file"} {
			commented[l+k] = "# " + strings.Repeat("  ", strings.Count(k, ".")) + k[strings.LastIndex(k, ".")+1:] + ":"
		}
	}
	// A JWT key set goes by URL or file; client certificates need a
	// listener with TLS.
	commented["auth.jwt.jwks_file"] = "# or jwks_file:"
	commented["auth.client_certificates"] = "# client_certificates:"
	commented["auth.client_certificates.identity"] = "#   identity:"
	var unset []string
	for _, p := range docKeyPaths(t) {
		if c, ok := commented[p]; ok && strings.Contains(example, c) {
			continue
		}
		if !set[p] {
			unset = append(unset, p)
		}
	}
	if len(unset) > 0 {
		t.Errorf("the complete example in %s does not set:\n  %s", configDoc, strings.Join(unset, "\n  "))
	}
}

// numericKeyPaths returns the key path of every number in Config, in the
// reference's notation, with its type.
func numericKeyPaths() map[string]reflect.Type {
	out := map[string]reflect.Type{}
	var walk func(typ reflect.Type, prefix string)
	walk = func(typ reflect.Type, prefix string) {
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		switch {
		case reflect.PointerTo(typ).Implements(unmarshalerType):
		case typ.Kind() == reflect.Slice:
			walk(typ.Elem(), prefix+"[]")
		case typ.Kind() == reflect.Struct:
			for i := 0; i < typ.NumField(); i++ {
				f := typ.Field(i)
				name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				if name == "" || name == "-" || !f.IsExported() {
					continue
				}
				walk(f.Type, join(prefix, name))
			}
		case isNumber(typ):
			out[prefix] = typ
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	return out
}

// TestRangesDocumented checks that every numeric key has a range, that
// every range belongs to a key, and that the key's row in CONFIG.md states
// the range exactly as validation errors do ("Range: 1 to 1000.").
func TestRangesDocumented(t *testing.T) {
	nums := numericKeyPaths()
	if len(nums) < 30 {
		t.Fatalf("found only %d numeric keys: the walk is broken", len(nums))
	}
	b, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "| `"); ok {
			if key, _, ok := strings.Cut(rest, "`"); ok {
				rows[key] = line
			}
		}
	}
	for key, typ := range nums {
		r, ok := ranges[key]
		if !ok {
			t.Errorf("%s has no range: add it to ranges in ranges.go and to its row in %s", key, configDoc)
			continue
		}
		want := "Range: " + rangeText(r, typ == durationType) + "."
		if !strings.Contains(rows[key], want) {
			t.Errorf("%s: the row of %s does not say %q", configDoc, key, want)
		}
	}
	for key := range ranges {
		if _, ok := nums[key]; !ok {
			t.Errorf("ranges has %s, which is not a numeric key", key)
		}
	}
}

// TestRangeKinds checks that every numeric key is a signed integer or a
// duration, the kinds inRange compares.
func TestRangeKinds(t *testing.T) {
	for key, typ := range numericKeyPaths() {
		switch typ.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		default:
			t.Errorf("%s is a %s: give inRange a case for it", key, typ)
		}
	}
}
