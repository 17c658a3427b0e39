package config

// HeaderNames are the Kafka header names of the record layout.
type HeaderNames struct {
	Service       string `yaml:"service"`
	Method        string `yaml:"method"`
	ReplyTo       string `yaml:"reply_to"`
	CorrelationID string `yaml:"correlation_id"`
	Status        string `yaml:"status"`
	Message       string `yaml:"message"`
	MetaPrefix    string `yaml:"meta_prefix"`
}

// DefaultHeaderNames are Zilla's header names.
func DefaultHeaderNames() HeaderNames {
	return HeaderNames{
		Service:       "zilla:service",
		Method:        "zilla:method",
		ReplyTo:       "zilla:reply-to",
		CorrelationID: "zilla:correlation-id",
		Status:        "zilla:status",
		Message:       "zilla:message",
		MetaPrefix:    "meta:",
	}
}

// fill sets every unset header name to Zilla's.
func (n *HeaderNames) fill() {
	d := DefaultHeaderNames()
	setDefault(&n.Service, d.Service)
	setDefault(&n.Method, d.Method)
	setDefault(&n.ReplyTo, d.ReplyTo)
	setDefault(&n.CorrelationID, d.CorrelationID)
	setDefault(&n.Status, d.Status)
	setDefault(&n.Message, d.Message)
	setDefault(&n.MetaPrefix, d.MetaPrefix)
}
