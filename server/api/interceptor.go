package api

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"buf.build/go/protovalidate"
	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connectproto"
	"google.golang.org/protobuf/proto"
)

// Recover turns a panicking handler into an internal error and logs the
// stack, so one bad request cannot take the control plane down.
func Recover(logger *slog.Logger) connect.ServerInterceptor {
	return func(next connect.ServerFunc) connect.ServerFunc {
		return func(ctx context.Context, spec connect.Spec, stream connect.ServerStream) (err error) {
			defer func() {
				if r := recover(); r != nil {
					logger.Error("handler panicked", "procedure", spec.Procedure, "panic", r, "stack", string(debug.Stack()))
					err = connect.NewError(connect.CodeInternal, "internal error")
				}
			}()
			return next(ctx, spec, stream)
		}
	}
}

// Log writes one line per failed RPC, with the cause of internal errors that
// the client never sees, and one debug line per successful RPC.
func Log(logger *slog.Logger) connect.ServerInterceptor {
	return func(next connect.ServerFunc) connect.ServerFunc {
		return func(ctx context.Context, spec connect.Spec, stream connect.ServerStream) error {
			start := time.Now()
			err := next(ctx, spec, stream)
			if err == nil {
				logger.LogAttrs(ctx, slog.LevelDebug, "rpc", slog.String("procedure", spec.Procedure), slog.Duration("took", time.Since(start)))
				return err
			}
			code := connect.CodeOf(err)
			attrs := []slog.Attr{
				slog.String("procedure", spec.Procedure),
				slog.String("code", code.String()),
				slog.Duration("took", time.Since(start)),
			}
			level := slog.LevelInfo
			switch code {
			case connect.CodeInternal, connect.CodeUnknown, connect.CodeDataLoss:
				level = slog.LevelError
				// The cause stays here; the client sees "internal error".
				attrs = append(attrs, slog.Any("err", errors.Unwrap(err)))
			case connect.CodeUnavailable:
				level = slog.LevelWarn
				attrs = append(attrs, slog.Any("err", errors.Unwrap(err)))
			default:
				attrs = append(attrs, slog.String("err", err.Error()))
			}
			logger.LogAttrs(ctx, level, "rpc failed", attrs...)
			return err
		}
	}
}

// Validate checks every request message against its protovalidate rules
// before the handler sees it. The error lists every violation with its field
// path and carries them as a buf.validate.Violations detail.
func Validate(validator protovalidate.Validator) connect.ServerInterceptor {
	return func(next connect.ServerFunc) connect.ServerFunc {
		return func(ctx context.Context, spec connect.Spec, stream connect.ServerStream) error {
			return next(ctx, spec, &validatingStream{ServerStream: stream, validator: validator})
		}
	}
}

type validatingStream struct {
	connect.ServerStream
	validator protovalidate.Validator
}

func (s *validatingStream) Receive(msg any) error {
	if err := s.ServerStream.Receive(msg); err != nil {
		return err
	}
	m, ok := msg.(proto.Message)
	if !ok {
		return nil
	}
	return validationError(s.validator.Validate(m))
}

// validationError converts a protovalidate error to an InvalidArgument error
// that names every field at fault.
func validationError(err error) error {
	if err == nil {
		return nil
	}
	var verr *protovalidate.ValidationError
	if !errors.As(err, &verr) {
		return connect.NewError(connect.CodeInternal, "internal error").WithCause(err)
	}
	msgs := make([]string, len(verr.Violations))
	for i, v := range verr.Violations {
		msgs[i] = v.String()
	}
	cerr := connect.NewError(connect.CodeInvalidArgument, strings.Join(msgs, "; "))
	if detail, derr := connectproto.NewErrorDetail(verr.ToProto()); derr == nil {
		cerr = cerr.WithDetail(detail)
	}
	return cerr
}
