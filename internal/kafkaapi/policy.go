package kafkaapi

import "context"

// The service's checks against its Policy; each allows everything when
// the service has none.

func (s *Service) allowConsume(ctx context.Context, group, topic string) error {
	if s.policy == nil {
		return nil
	}
	return s.policy.Consume(ctx, group, topic)
}

func (s *Service) allowOffsets(ctx context.Context, group, topic string) error {
	if s.policy == nil {
		return nil
	}
	return s.policy.Offsets(ctx, group, topic)
}

func (s *Service) allowDescribe(ctx context.Context, name string) error {
	if s.policy == nil {
		return nil
	}
	return s.policy.Describe(ctx, name)
}

// visible returns the names of a listing the caller may see.
func (s *Service) visible(ctx context.Context, names []string) []string {
	if s.policy == nil {
		return names
	}
	out := names[:0]
	for _, n := range names {
		if s.policy.Visible(ctx, n) {
			out = append(out, n)
		}
	}
	return out
}
