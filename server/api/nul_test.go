package api

import (
	"errors"
	"strings"
	"testing"

	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// step is one move from a message into a field on the way to a string.
type step struct {
	fd protoreflect.FieldDescriptor
	// mapKey: the string is the map's key, not its value.
	mapKey bool
}

// TestEveryRequestStringRefusesNUL puts a NUL byte into each string of
// each request of the API in turn, nested messages, list items, map keys
// and values included, and checks that validation refuses it naming that
// field: no text column of the registry can hold a NUL, and a request that
// reached one would fail as an internal error.
func TestEveryRequestStringRefusesNUL(t *testing.T) {
	validator, err := protovalidate.New()
	if err != nil {
		t.Fatal(err)
	}
	// The generated package registers the files walked below.
	_ = casarev1.File_casare_v1_job_proto
	checked := 0
	protoregistry.GlobalFiles.RangeFilesByPackage("casare.v1", func(f protoreflect.FileDescriptor) bool {
		for i := range f.Services().Len() {
			svc := f.Services().Get(i)
			for j := range svc.Methods().Len() {
				in := svc.Methods().Get(j).Input()
				for _, path := range stringPaths(in, nil, map[protoreflect.FullName]bool{}) {
					name := string(in.Name()) + "." + pathName(path)
					t.Run(name, func(t *testing.T) {
						msg := dynamicpb.NewMessage(in)
						setNUL(msg, path)
						err := validator.Validate(msg)
						var verr *protovalidate.ValidationError
						if !errors.As(err, &verr) {
							t.Fatalf("a NUL in %s passed validation (%v); give the field (buf.validate.field).string.(casare.v1.no_nul) = true", name, err)
						}
						for _, v := range verr.Violations {
							field := protovalidate.FieldPathString(v.Proto.GetField())
							if v.Proto.GetRuleId() == "string.no_nul" && strings.HasPrefix(field, string(path[0].fd.Name())) &&
								strings.Contains(field, string(path[len(path)-1].fd.Name())) {
								if !strings.Contains(v.String(), "NUL") {
									t.Errorf("violation %q does not say what is wrong", v.String())
								}
								return
							}
						}
						t.Fatalf("a NUL in %s: violations %v name no no_nul rule on the field", name, err)
					})
					checked++
				}
			}
		}
		return true
	})
	if checked < 40 {
		t.Fatalf("checked only %d request strings; the walk is broken", checked)
	}
}

// stringPaths lists the paths from md to every string below it, each
// message type once along a path (Step nests Step).
func stringPaths(md protoreflect.MessageDescriptor, prefix []step, seen map[protoreflect.FullName]bool) [][]step {
	if strings.HasPrefix(string(md.FullName()), "google.protobuf.") || seen[md.FullName()] {
		return nil
	}
	seen[md.FullName()] = true
	defer delete(seen, md.FullName())
	var out [][]step
	with := func(s step) []step { return append(append([]step(nil), prefix...), s) }
	for i := range md.Fields().Len() {
		fd := md.Fields().Get(i)
		switch {
		case fd.IsMap():
			if fd.MapKey().Kind() == protoreflect.StringKind {
				out = append(out, with(step{fd: fd, mapKey: true}))
			}
			switch fd.MapValue().Kind() {
			case protoreflect.StringKind:
				out = append(out, with(step{fd: fd}))
			case protoreflect.MessageKind:
				out = append(out, stringPaths(fd.MapValue().Message(), with(step{fd: fd}), seen)...)
			}
		case fd.Kind() == protoreflect.StringKind:
			out = append(out, with(step{fd: fd}))
		case fd.Kind() == protoreflect.MessageKind:
			out = append(out, stringPaths(fd.Message(), with(step{fd: fd}), seen)...)
		}
	}
	return out
}

func pathName(path []step) string {
	parts := make([]string, len(path))
	for i, s := range path {
		parts[i] = string(s.fd.Name())
		if s.mapKey {
			parts[i] += "[key]"
		}
	}
	return strings.Join(parts, ".")
}

// setNUL sets the string at the end of path to "a\x00b", making the
// messages, list items and map entries on the way.
func setNUL(m protoreflect.Message, path []step) {
	nul := protoreflect.ValueOfString("a\x00b")
	for i, s := range path {
		last := i == len(path)-1
		fd := s.fd
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			switch {
			case s.mapKey:
				v := protoreflect.ValueOfString("x")
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					v = mp.NewValue()
				}
				mp.Set(nul.MapKey(), v)
			case last:
				mp.Set(protoreflect.ValueOfString("k").MapKey(), nul)
			default:
				m = mp.Mutable(protoreflect.ValueOfString("k").MapKey()).Message()
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			if last {
				l.Append(nul)
			} else {
				v := l.NewElement()
				l.Append(v)
				m = v.Message()
			}
		case last:
			m.Set(fd, nul)
		default:
			m = m.Mutable(fd).Message()
		}
	}
}
