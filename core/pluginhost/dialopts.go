package pluginhost

import "google.golang.org/grpc"

// WithDialOptions adds the options dial returns for a plugin to each of
// its connections, e.g. keeld's interceptors that time the calls to it.
func WithDialOptions(dial func(kind, name string) []grpc.DialOption) Option {
	return func(o *options) { o.dial = dial }
}

// dialOptions are the extra options of the instance's connections.
func (in *instance) dialOptions() []grpc.DialOption {
	if in.h.opts.dial == nil {
		return nil
	}
	return in.h.opts.dial(in.spec.Kind, in.spec.Name)
}
