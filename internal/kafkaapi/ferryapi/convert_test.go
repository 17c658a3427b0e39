package ferryapi

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/internal/kafkaapi"
)

// TestNumbersFitFloat64 checks which JSON values can be presented as a
// google.protobuf.Value without changing a number.
func TestNumbersFitFloat64(t *testing.T) {
	for v, want := range map[string]bool{
		`{"n":2,"x":[1.5,-3e2,0.1]}`:  true,
		`"text"`:                      true,
		`{"id":12345678901234567891}`: false, // beyond 2^53
		`[9007199254740993]`:          false,
		`{"a":{"b":1e400}}`:           false, // overflows
		`{"small":9007199254740992}`:  true,
		`null`:                        true,
		`[1e-999999]`:                 false, // underflows; 20 ms as exact rationals
		`[0.1e1, 100E-2, -0, 0e5]`:    true,
		`[1.0000000000000001]`:        false,
	} {
		if got := numbersFitFloat64([]byte(v)); got != want {
			t.Errorf("%s: %v, want %v", v, got, want)
		}
	}
}

// FuzzPresentValue checks that presenting a record value as value_format
// asks never changes it: a value shown as JSON means the same JSON as the
// record's bytes (key order and number spelling aside), a value shown as
// text is the record's bytes, and anything else comes as the bytes
// themselves — exactly one of the three fields set.
func FuzzPresentValue(f *testing.F) {
	for _, s := range []string{`{"n":2,"x":[1.5,-3e2,0.1]}`, `"text"`, `{"id":12345678901234567891}`,
		`{"b":1,"a":[true,null]}`, `"\ud800"`, `{"a":1,"a":2}`, "\xff", `1E2`, `-0`, ``, ` [ ] `, `"\u00e9t\u00e9"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		v = append([]byte{}, v...) // non-nil: a null value is never presented
		var b messageBuf
		for _, vf := range []kafkav1.ValueFormat{kafkav1.ValueFormat_VALUE_FORMAT_JSON, kafkav1.ValueFormat_VALUE_FORMAT_TEXT, kafkav1.ValueFormat_VALUE_FORMAT_BYTES} {
			m := b.fill(&kafkaapi.Message{Value: v}, vf)
			switch {
			case m.ValueJson != nil && m.ValueBytes == nil && m.ValueText == nil:
				if vf != kafkav1.ValueFormat_VALUE_FORMAT_JSON {
					t.Fatalf("%s: %q came as JSON", vf, v)
				}
				out, err := compactJSON(m.ValueJson)
				if err != nil {
					t.Fatalf("%q came as JSON that does not encode: %v", v, err)
				}
				if !sameJSON(t, v, out) {
					t.Fatalf("%q came as JSON %s, which means something else", v, out)
				}
			case m.ValueText != nil && m.ValueBytes == nil && m.ValueJson == nil:
				if vf != kafkav1.ValueFormat_VALUE_FORMAT_TEXT || *m.ValueText != string(v) || !utf8.ValidString(*m.ValueText) {
					t.Fatalf("%s: %q came as text %q", vf, v, *m.ValueText)
				}
			case m.ValueBytes != nil && m.ValueText == nil && m.ValueJson == nil:
				if !bytes.Equal(m.ValueBytes, v) {
					t.Fatalf("%s: %q came as bytes %q", vf, v, m.ValueBytes)
				}
			default:
				t.Fatalf("%s: %q came as bytes %q, text %v and JSON %v: want exactly one", vf, v, m.ValueBytes, m.ValueText, m.ValueJson)
			}
		}
	})
}

// sameJSON reports whether the JSON texts a and b hold the same value,
// with numbers compared exactly.
func sameJSON(t *testing.T, a, b []byte) bool {
	decode := func(v []byte) any {
		d := json.NewDecoder(bytes.NewReader(v))
		d.UseNumber()
		var x any
		if err := d.Decode(&x); err != nil {
			t.Fatalf("%q does not decode: %v", v, err)
		}
		return x
	}
	return equalJSON(decode(a), decode(b))
}

func equalJSON(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, av := range a {
			bv, ok := b[k]
			if !ok || !equalJSON(av, bv) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !equalJSON(a[i], b[i]) {
				return false
			}
		}
		return true
	case json.Number:
		b, ok := b.(json.Number)
		if !ok {
			return false
		}
		return sameNumber(string(a), string(b))
	default: // string, bool, nil
		return a == b
	}
}

func TestSameNumber(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"1", "1e+00", true},
		{"1.50e3", "1.5e+03", true},
		{"-1500", "-1.5e+03", true},
		{"1500", "-1.5e+03", false},
		{"0.001", "1e-03", true},
		{"100E-2", "1e+00", true},
		{"-0", "0e+00", true},
		{"0.0e99999", "0e+00", true},
		{"12345678901234567891", "1.2345678901234567e+19", false},
		{"1e-99999999", "0e+00", false},
		{"1e99999999999", "1e+00", false}, // exponent beyond an int32
		{"1.2.3", "1", false},
		{"", "0", false},
	} {
		if got := sameNumber(tc.a, tc.b); got != tc.want {
			t.Errorf("sameNumber(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
