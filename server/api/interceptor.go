package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"buf.build/go/protovalidate"
	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connectproto"
	"google.golang.org/protobuf/proto"

	"github.com/casarerpa/casare/agent/workflow"
	"github.com/casarerpa/casare/agent/workflow/expr"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
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
				err = capError(err)
				attrs = append(attrs, slog.String("err", err.Error()))
			}
			logger.LogAttrs(ctx, level, "rpc failed", attrs...)
			return err
		}
	}
}

// maxEchoed bounds one quoted violation, and maxErrorMessage the message of
// an error a client is answered and the server logs: an error about a huge
// input must not echo it back.
const (
	maxEchoed       = 1024
	maxErrorMessage = 32 << 10
)

// capError cuts the message of an error for the client to maxErrorMessage,
// keeping its code and details.
func capError(err error) error {
	var cerr *connect.Error
	if !errors.As(err, &cerr) || len(cerr.Message()) <= maxErrorMessage {
		return err
	}
	capped := connect.NewError(cerr.Code(), expr.Truncate(cerr.Message(), maxErrorMessage))
	for _, d := range cerr.Details() {
		capped = capped.WithDetail(d)
	}
	return capped
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
	return checkRequest(s.validator, msg)
}

// checkRequest checks a request message against its protovalidate rules,
// and a workflow in it against the size limits first.
func checkRequest(validator protovalidate.Validator, msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil
	}
	// A workflow's size limits come before its rules, so that no rule
	// ever runs over a workflow too large to check quickly.
	if w, ok := msg.(interface{ GetWorkflow() *casarev1.Workflow }); ok && w.GetWorkflow() != nil {
		if err := workflow.CheckLimits(w.GetWorkflow()); err != nil {
			return workflowError(err)
		}
	}
	return validationError(validator.Validate(m))
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
	msgs := make([]string, 0, min(len(verr.Violations), workflow.MaxProblems+1))
	for _, v := range verr.Violations {
		if len(msgs) == workflow.MaxProblems {
			msgs = append(msgs, fmt.Sprintf("and %d more", len(verr.Violations)-workflow.MaxProblems))
			break
		}
		msgs = append(msgs, expr.Truncate(v.String(), maxEchoed))
	}
	cerr := connect.NewError(connect.CodeInvalidArgument, strings.Join(msgs, "; "))
	violations := verr.ToProto()
	if len(violations.GetViolations()) > workflow.MaxProblems {
		violations.Violations = violations.Violations[:workflow.MaxProblems]
	}
	if detail, derr := connectproto.NewErrorDetail(violations); derr == nil {
		cerr = cerr.WithDetail(detail)
	}
	return cerr
}
