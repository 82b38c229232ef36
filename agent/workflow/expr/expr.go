// Package expr holds the expression language of workflows: CEL inside
// ${{ }} in strings, bare in if and foreach. The validator type-checks
// expressions with it and the engine evaluates them, so both agree on what
// an expression means.
package expr

import (
	"errors"
	"fmt"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/ext"
	"cel.dev/cel-go/interpreter"
	"cel.dev/cel-go/parser"
	exprpb "google.golang.org/genproto/googleapis/api/expr/v1alpha1"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// DefaultCostLimit bounds the work one evaluation may do. CEL never loops
// forever, but a comprehension over a large list can still run long; a
// million units is far beyond what a workflow's glue needs.
const DefaultCostLimit = 1_000_000

// Names a workflow expression may use.
const (
	Inputs = "inputs"
	Vars   = "vars"
	Steps  = "steps"
	Item   = "item"
	Index  = "index"
	Job    = "job"
	Error  = "error"
	// Assets are the job's assets by name (assets.mail_server) and
	// Credentials its credentials (credentials.sap.username, .password),
	// resolved by the control plane for the robot that runs the job.
	Assets      = "assets"
	Credentials = "credentials"
)

// base is the environment every expression is parsed and checked in; an
// environment is immutable once built and safe for concurrent use, so one
// serves every workflow.
var base = func() *cel.Env {
	dynMap := cel.MapType(cel.StringType, cel.DynType)
	env, err := cel.NewEnv(append([]cel.EnvOption{
		cel.Variable(Inputs, dynMap),
		cel.Variable(Vars, dynMap),
		cel.Variable(Steps, dynMap),
		cel.Variable(Item, cel.DynType),
		cel.Variable(Index, cel.IntType),
		cel.Variable(Job, dynMap),
		cel.Variable(Error, dynMap),
		cel.Variable(Assets, dynMap),
		cel.Variable(Credentials, cel.MapType(cel.StringType, cel.MapType(cel.StringType, cel.StringType))),
	}, library()...)...)
	if err != nil {
		panic("expr: " + err.Error())
	}
	return env
}()

// library is the language without its variables: the functions and
// options every environment of it has.
func library() []cel.EnvOption {
	return []cel.EnvOption{
		ext.Strings(),
		// The versions cel-go v0.32 had: later ones add functions
		// (lists' hasAll, encoders' json.parse and yaml.parse) that would
		// widen the language by an upgrade alone.
		ext.Lists(ext.ListsVersion(3)),
		ext.Math(),
		ext.Encoders(ext.EncodersVersion(1)),
		// JSON numbers arrive as doubles; `size(x) > 0.0` should not be
		// needed to compare one with an int.
		cel.CrossTypeNumericComparisons(true),
		// After the first syntax error the parser tries to recover and
		// go on, which in an expression like [[[[... costs milliseconds
		// per character and finds only errors that follow from the
		// first: a thousand such expressions took seconds to check.
		cel.ParserErrorRecoveryLimit(1),
	}
}

// prattParser parses the language base does, with its macros and its
// error recovery limit, but with cel-go's hand-written Pratt parser instead
// of the ANTLR one that cel.Env uses and gives no option to change. The
// ANTLR parser cannot tell a negative number after an operator from a
// negation without reading to the end of the expression: 'a+-1+-1…' costs
// it milliseconds per 64 bytes, the Pratt parser microseconds, and plain
// expressions are several times cheaper too. TestPrattParsesAsANTLR holds
// the two to the same syntax trees.
var prattParser = func() *parser.Parser {
	p, err := parser.NewParser(
		parser.Macros(base.Macros()...),
		parser.ErrorRecoveryLimit(1),
		parser.EnablePrattParser(true),
	)
	if err != nil {
		panic("expr: " + err.Error())
	}
	return p
}()

// parse parses src as base.Parse does, with prattParser.
func parse(src string) (*cel.Ast, *cel.Issues) {
	p, iss := parseNative(src)
	if iss != nil {
		return nil, iss
	}
	return p.ast()
}

// Parsed is an expression parsed but not yet checked.
type Parsed struct {
	source common.Source
	tree   *ast.AST
}

// Nodes is the size of the expression's syntax tree, macros expanded:
// type-checking costs about the same for each node.
func (p *Parsed) Nodes() int { return ast.NodeCount(p.tree) }

// Parse parses src. Parsing costs a fraction of checking, so a caller
// that bounds the work of checking many expressions parses them first to
// count their nodes.
func Parse(src string) (*Parsed, error) {
	p, iss := parseNative(src)
	if iss != nil {
		return nil, issuesError(iss)
	}
	return p, nil
}

func parseNative(src string) (*Parsed, *cel.Issues) {
	source := common.NewTextSource(src)
	parsed, errs := prattParser.Parse(source)
	if all := errs.GetErrors(); len(all) > 0 {
		// After its first syntax error the parser recovers once, and
		// what it finds then follows from the first.
		first := common.NewErrors(source)
		first.ReportErrorString(all[0].Location, all[0].Message)
		return nil, cel.NewIssues(first)
	}
	return &Parsed{source: source, tree: parsed}, nil
}

func (p *Parsed) ast() (*cel.Ast, *cel.Issues) {
	source, parsed := p.source, p.tree
	// cel.Ast has no constructor from the native tree: it is built
	// from the tree's protobuf form, which costs little beside parsing.
	e, err := ast.ExprToProto(parsed.Expr())
	if err != nil {
		return nil, errorIssues(source, err)
	}
	info, err := ast.SourceInfoToProto(parsed.SourceInfo())
	if err != nil {
		return nil, errorIssues(source, err)
	}
	return cel.ParsedExprToAstWithSource(&exprpb.ParsedExpr{Expr: e, SourceInfo: info}, source), nil
}

func errorIssues(source common.Source, err error) *cel.Issues {
	errs := common.NewErrors(source)
	errs.ReportErrorString(common.NoLocation, err.Error())
	return cel.NewIssues(errs)
}

// Checker type-checks the expressions of one workflow, knowing the types
// of its declared inputs.
type Checker struct {
	env *cel.Env
}

// NewChecker returns a checker for a workflow with the given inputs.
// Each declared input is a variable of its own (inputs.count: int), so
// `inputs.count + 1` checks and `inputs.name + 1` does not.
func NewChecker(inputs map[string]*casarev1.InputSpec) (*Checker, error) {
	var opts []cel.EnvOption
	for name, spec := range inputs {
		opts = append(opts, cel.Variable(Inputs+"."+name, InputType(spec.GetType())))
	}
	if len(opts) == 0 {
		return &Checker{env: base}, nil
	}
	env, err := base.Extend(opts...)
	if err != nil {
		return nil, err
	}
	return &Checker{env: env}, nil
}

// InputType is the CEL type of an input declared with type t.
func InputType(t string) *cel.Type {
	switch t {
	case "string":
		return cel.StringType
	case "number":
		return cel.DoubleType
	case "integer":
		return cel.IntType
	case "boolean":
		return cel.BoolType
	case "object":
		return cel.MapType(cel.StringType, cel.DynType)
	case "array":
		return cel.ListType(cel.DynType)
	}
	return cel.DynType
}

// Check parses and type-checks src. The error lists every problem with
// its column.
func (c *Checker) Check(src string) (*cel.Ast, error) {
	p, err := Parse(src)
	if err != nil {
		return nil, err
	}
	return c.CheckParsed(p)
}

// CheckParsed type-checks an expression Parse returned.
func (c *Checker) CheckParsed(p *Parsed) (*cel.Ast, error) {
	parsed, iss := p.ast()
	if iss.Err() != nil {
		return nil, issuesError(iss)
	}
	checked, iss := c.env.Check(parsed)
	if iss.Err() != nil {
		return nil, issuesError(iss)
	}
	return checked, nil
}

func issuesError(iss *cel.Issues) error {
	var msgs []string
	for _, e := range iss.Errors() {
		if strings.Contains(e.Message, "error recovery attempt limit exceeded") {
			// Says only that the parser stopped at the errors before.
			continue
		}
		// The parser's list of every token it could have taken says
		// less than the column does.
		msg, _, _ := strings.Cut(e.Message, " expecting {")
		if e.Location != nil && e.Location.Column() >= 0 {
			msg = fmt.Sprintf("column %d: %s", e.Location.Column()+1, msg)
		}
		msgs = append(msgs, msg)
	}
	return errors.New(strings.Join(msgs, "; "))
}

// Program is an expression ready to evaluate.
type Program struct {
	src  string
	prg  cel.Program
	refs Refs
}

// Compile parses src into a program limited to costLimit units per
// evaluation (DefaultCostLimit when 0). It does not type-check: the
// validator did, and the values decide the rest at run time.
func Compile(src string, costLimit uint64) (*Program, error) {
	if costLimit == 0 {
		costLimit = DefaultCostLimit
	}
	parsed, iss := parse(src)
	if iss.Err() != nil {
		return nil, issuesError(iss)
	}
	// The cost limit bounds an evaluation to milliseconds, so it is not
	// worth watching the job's context inside one (which would cost a
	// context per evaluation).
	prg, err := base.Program(parsed,
		cel.CostLimit(costLimit),
		cel.CostTracking(sizeCost{}),
		cel.CustomDecoratorV2(sizeDecorator),
	)
	if err != nil {
		return nil, err
	}
	return &Program{src: src, prg: prg, refs: References(parsed)}, nil
}

// Source is the text the program was compiled from.
func (p *Program) Source() string { return p.src }

// Refs lists what the program refers to, so the engine can tell which
// values an evaluation reads without watching it.
func (p *Program) Refs() Refs { return p.refs }

// ErrTooCostly says an evaluation went past its cost limit.
var ErrTooCostly = errors.New("the expression does too much work (cost limit exceeded)")

// Eval evaluates the program against vars and returns its value in the
// JSON-like form workflows use (string, float64, bool, nil, []any,
// map[string]any).
func (p *Program) Eval(vars interpreter.Activation) (any, error) {
	out, _, err := p.prg.Eval(vars)
	if err != nil {
		var cancelled interpreter.EvalCancelledError
		if errors.As(err, &cancelled) && cancelled.Cause == interpreter.CostLimitExceeded {
			return nil, ErrTooCostly
		}
		if tl, ok := asTooLarge(err); ok {
			return nil, tl
		}
		return nil, err
	}
	return Native(out)
}

// Refs are the names an expression uses that the validator checks
// against the workflow.
type Refs struct {
	// Steps are the step ids read as steps.ID.
	Steps []string
	// Inputs are the inputs read as inputs.NAME.
	Inputs []string
	// Vars are the variables read as vars.NAME.
	Vars []string
	// Idents are the top-level names used (item, index, error, ...).
	Idents []string
	// Assets are the assets read as assets.NAME.
	Assets []string
	// Credentials are the credentials read as credentials.NAME, with the
	// field read after it (username, password) when there is one.
	Credentials []CredentialRef
}

// CredentialRef is a credential an expression reads.
type CredentialRef struct {
	Name  string
	Field string // "" when the expression reads the whole credential
}

// References lists what a parsed or checked expression refers to.
func References(a *cel.Ast) Refs {
	return references(a.NativeRep().Expr())
}

// ReferencesParsed lists what a parsed expression refers to, without
// type-checking it.
func ReferencesParsed(p *Parsed) Refs {
	return references(p.tree.Expr())
}

func references(root ast.Expr) Refs {
	var r Refs
	// A plain visit: navigating the AST would wrap every node first, and
	// the validator lists the references of a thousand expressions.
	ast.PostOrderVisit(root, ast.NewExprVisitor(func(e ast.Expr) {
		switch e.Kind() {
		case ast.IdentKind:
			name := e.AsIdent()
			// A checked AST may have resolved inputs.count into one
			// qualified identifier.
			if in, ok := strings.CutPrefix(name, Inputs+"."); ok {
				r.Inputs = append(r.Inputs, in)
				name = Inputs
			}
			r.Idents = append(r.Idents, name)
		case ast.SelectKind:
			sel := e.AsSelect()
			if op := sel.Operand(); op.Kind() == ast.IdentKind {
				switch op.AsIdent() {
				case Steps:
					r.Steps = append(r.Steps, sel.FieldName())
				case Inputs:
					r.Inputs = append(r.Inputs, sel.FieldName())
				case Vars:
					r.Vars = append(r.Vars, sel.FieldName())
				case Assets:
					r.Assets = append(r.Assets, sel.FieldName())
				case Credentials:
					r.Credentials = append(r.Credentials, CredentialRef{Name: sel.FieldName()})
				}
			} else if op.Kind() == ast.SelectKind {
				// credentials.NAME.FIELD: the inner select was visited
				// first (post-order) and recorded NAME alone.
				inner := op.AsSelect()
				if in := inner.Operand(); in.Kind() == ast.IdentKind && in.AsIdent() == Credentials {
					n := len(r.Credentials)
					if n > 0 && r.Credentials[n-1].Name == inner.FieldName() && r.Credentials[n-1].Field == "" {
						r.Credentials[n-1].Field = sel.FieldName()
					}
				}
			}
		}
	}))
	return r
}

// Piece is a part of a template: literal text or an expression.
type Piece struct {
	Text string
	Expr string
	// IsExpr tells an empty expression (an error) from empty text.
	IsExpr bool
}

// Template is a string with ${{ expression }} parts.
type Template struct {
	Pieces []Piece
}

// Lone reports whether the template is exactly one expression, which
// keeps its value's type instead of becoming text.
func (t Template) Lone() bool { return len(t.Pieces) == 1 && t.Pieces[0].IsExpr }

// HasExpr reports whether the template has any expression at all.
func (t Template) HasExpr() bool {
	for _, p := range t.Pieces {
		if p.IsExpr {
			return true
		}
	}
	return false
}

// ParseTemplate splits s at its ${{ }} parts. An expression ends at the
// first }} after it starts.
func ParseTemplate(s string) (Template, error) {
	var t Template
	for {
		start := strings.Index(s, "${{")
		if start < 0 {
			if s != "" {
				t.Pieces = append(t.Pieces, Piece{Text: s})
			}
			return t, nil
		}
		if start > 0 {
			t.Pieces = append(t.Pieces, Piece{Text: s[:start]})
		}
		rest := s[start+3:]
		end := strings.Index(rest, "}}")
		if end < 0 {
			return Template{}, errors.New("${{ without a closing }}")
		}
		src := strings.TrimSpace(rest[:end])
		if src == "" {
			return Template{}, errors.New("empty ${{ }}")
		}
		t.Pieces = append(t.Pieces, Piece{Expr: src, IsExpr: true})
		s = rest[end+2:]
	}
}

// Bare returns the expression of an if or foreach, which may be written
// bare or inside one ${{ }}.
func Bare(s string) string {
	s = strings.TrimSpace(s)
	if t, err := ParseTemplate(s); err == nil && t.Lone() {
		return t.Pieces[0].Expr
	}
	return s
}
