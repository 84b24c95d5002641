// Command gotmpl renders an Ollama chat TEMPLATE the way Ollama does for /api/chat,
// with Go's own text/template, so tests can compare it byte for byte with other renderers.
//
// Input on stdin: one JSON object {"template", "system", "messages": [{"role", "content"}]}
// or a JSON array of them. Output: the rendered prompt (for an object) or a JSON array
// of rendered prompts (for an array). "system" is the Modelfile's SYSTEM.
//
// What it mirrors (ollama/ollama server/routes.go ChatHandler and template/template.go):
//   - the model's SYSTEM becomes a leading system message when the request's first
//     message is not a system message;
//   - consecutive messages of one role (tool messages aside) are merged with "\n\n";
//   - the template gets System (every system message's content joined with "\n\n"),
//     Messages (system messages included), Tools, Response "" and the Think fields;
//   - the template is parsed with missingkey=zero and Ollama's helper functions.
//
// Ollama's legacy mode (templates without .Messages, rendered turn by turn through
// .Prompt/.Response) is not reproduced: such templates are refused.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// templateMessage has the fields Ollama hands a template for each message.
type templateMessage struct {
	Role       string
	Content    string
	Thinking   string
	Images     []string
	ToolCalls  []any
	ToolName   string
	ToolCallID string
}

type request struct {
	Template string    `json:"template"`
	System   string    `json:"system"`
	Messages []message `json:"messages"`
}

var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
	"currentDate":   func(args ...string) string { return time.Now().Format("2006-01-02") },
	"yesterdayDate": func(args ...string) string { return time.Now().AddDate(0, 0, -1).Format("2006-01-02") },
}

// identifiers lists the field names a parse tree refers to, lower-cased (Ollama's Vars).
func identifiers(n parse.Node, out map[string]bool) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n != nil {
			for _, c := range n.Nodes {
				identifiers(c, out)
			}
		}
	case *parse.ActionNode:
		identifiers(n.Pipe, out)
	case *parse.BranchNode:
		identifiers(n.Pipe, out)
		identifiers(n.List, out)
		identifiers(n.ElseList, out)
	case *parse.IfNode:
		identifiers(&n.BranchNode, out)
	case *parse.RangeNode:
		identifiers(&n.BranchNode, out)
	case *parse.WithNode:
		identifiers(&n.BranchNode, out)
	case *parse.TemplateNode:
		identifiers(n.Pipe, out)
	case *parse.PipeNode:
		if n != nil {
			for _, c := range n.Cmds {
				identifiers(c, out)
			}
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			identifiers(a, out)
		}
	case *parse.FieldNode:
		for _, id := range n.Ident {
			out[strings.ToLower(id)] = true
		}
	case *parse.ChainNode:
		for _, id := range n.Field {
			out[strings.ToLower(id)] = true
		}
		identifiers(n.Node, out)
	}
}

// collate merges consecutive same-role messages and collects the system messages.
func collate(msgs []message) (string, []*templateMessage) {
	var system []string
	var out []*templateMessage
	for _, m := range msgs {
		if m.Role == "system" {
			system = append(system, m.Content)
		}
		if len(out) > 0 && out[len(out)-1].Role == m.Role && m.Role != "tool" {
			out[len(out)-1].Content += "\n\n" + m.Content
		} else {
			out = append(out, &templateMessage{Role: m.Role, Content: m.Content})
		}
	}
	return strings.Join(system, "\n\n"), out
}

func render(r request) (string, error) {
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(r.Template)
	if err != nil {
		return "", err
	}
	vars := map[string]bool{}
	for _, t := range tmpl.Templates() {
		identifiers(t.Tree.Root, vars)
	}
	if !vars["messages"] {
		return "", fmt.Errorf("template does not use .Messages: Ollama's legacy prompt mode is not reproduced")
	}
	msgs := make([]message, 0, len(r.Messages)+1)
	for _, m := range r.Messages {
		msgs = append(msgs, message{Role: strings.ToLower(m.Role), Content: m.Content})
	}
	if len(msgs) > 0 && msgs[0].Role != "system" && r.System != "" {
		msgs = append([]message{{Role: "system", Content: r.System}}, msgs...)
	}
	system, collated := collate(msgs)
	var b bytes.Buffer
	err = tmpl.Execute(&b, map[string]any{
		"System":     system,
		"Messages":   collated,
		"Tools":      nil,
		"Response":   "",
		"Think":      false,
		"ThinkLevel": "",
		"IsThinkSet": false,
	})
	return b.String(), err
}

func main() {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	in = bytes.TrimSpace(in)
	if len(in) > 0 && in[0] == '[' {
		var reqs []request
		if err := json.Unmarshal(in, &reqs); err != nil {
			fail(err)
		}
		outs := make([]string, len(reqs))
		for i, r := range reqs {
			if outs[i], err = render(r); err != nil {
				fail(fmt.Errorf("case %d: %w", i, err))
			}
		}
		if err := json.NewEncoder(os.Stdout).Encode(outs); err != nil {
			fail(err)
		}
		return
	}
	var r request
	if err := json.Unmarshal(in, &r); err != nil {
		fail(err)
	}
	out, err := render(r)
	if err != nil {
		fail(err)
	}
	os.Stdout.WriteString(out)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gotmpl:", err)
	os.Exit(1)
}
