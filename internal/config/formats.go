package config

// Value formats of record values (see ProduceRoute.Format).
const (
	// FormatProtobuf values are serialized protobuf messages, passed as
	// they are.
	FormatProtobuf = "protobuf"
	// FormatJSON values are the protojson of the method's messages,
	// converted at Ferry's edge.
	FormatJSON = "json"
)

// JSONOptions shape the JSON Ferry writes for a route or back end whose
// format is json. Reading accepts both field name styles either way.
type JSONOptions struct {
	// FieldNames is json (lowerCamelCase JSON names, protojson's default)
	// or proto (the names in the .proto file).
	FieldNames string `yaml:"field_names"`
	// EmitDefaults writes fields that hold their default value (zero,
	// empty, false) too; off, they are left out.
	EmitDefaults bool `yaml:"emit_defaults"`
}
