package kafkaapi

import "context"

// The service's checks against its Policy; each allows everything when
// the service has none.

func (s *Service) allowConsume(ctx context.Context, group, topic string) error {
	p := s.currentPolicy()
	if p == nil {
		return nil
	}
	return p.Consume(ctx, group, topic)
}

func (s *Service) allowOffsets(ctx context.Context, group, topic string) error {
	p := s.currentPolicy()
	if p == nil {
		return nil
	}
	return p.Offsets(ctx, group, topic)
}

func (s *Service) allowDescribe(ctx context.Context, name string) error {
	p := s.currentPolicy()
	if p == nil {
		return nil
	}
	return p.Describe(ctx, name)
}

// visible returns the names of a listing the caller may see.
func (s *Service) visible(ctx context.Context, names []string) []string {
	p := s.currentPolicy()
	if p == nil {
		return names
	}
	out := names[:0]
	for _, n := range names {
		if p.Visible(ctx, n) {
			out = append(out, n)
		}
	}
	return out
}
