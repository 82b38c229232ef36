package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect/v2"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

func TestWorkflowErrorsAreCapped(t *testing.T) {
	wf := &casarev1.Workflow{}
	for i := range 200 {
		w, _ := structpb.NewStruct(map[string]any{"message": fmt.Sprintf("${{ steps.nope%d.outputs.x }}", i)})
		wf.Steps = append(wf.Steps, &casarev1.Step{Id: fmt.Sprintf("s%d", i), Uses: "log", With: w})
	}
	err := validateWorkflow(context.Background(), wf)
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("err = %.200v", err)
	}
	msg := err.Error()
	if len(msg) > 4<<10 || !strings.HasSuffix(msg, "; and 180 more") {
		t.Errorf("error of %d bytes ending %q", len(msg), msg[max(len(msg)-60, 0):])
	}
}

func TestValidateWorkflowStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	wf := &casarev1.Workflow{Steps: []*casarev1.Step{{Id: "a", Uses: "log"}}}
	if err := validateWorkflow(ctx, wf); connect.CodeOf(err) != connect.CodeCanceled {
		t.Fatalf("err = %v, want canceled", err)
	}
}

func TestCapError(t *testing.T) {
	long := connect.NewError(connect.CodeInvalidArgument, strings.Repeat("y", 5<<20))
	capped := capError(long)
	var cerr *connect.Error
	if !errors.As(capped, &cerr) || cerr.Code() != connect.CodeInvalidArgument || len(cerr.Message()) > maxErrorMessage || !strings.Contains(cerr.Message(), "… [cut: ") {
		t.Errorf("capped to %v, %d bytes", connect.CodeOf(capped), len(capped.Error()))
	}
	short := connect.NewError(connect.CodeNotFound, "nope")
	if capError(short) != short {
		t.Error("a short error was changed")
	}
}
