"""Tables for run reports: plain text for the terminal, HTML for index.html, success cells."""

import html


def text_table(rows: list[list[str]]) -> str:
    """Rows (header first) as aligned plain-text columns with a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ['  '.join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def html_table(rows: list[list[str]]) -> str:
    """Rows (header first) as an HTML table, every cell escaped."""
    head = ''.join(f'<th>{html.escape(c)}</th>' for c in rows[0])
    body = ''.join('<tr>' + ''.join(f'<td>{html.escape(c)}</td>' for c in row) + '</tr>'
                   for row in rows[1:])
    return f'<table><tr>{head}</tr>{body}</table>'


def rate_cell(row: dict) -> str:
    """``successes/episodes = rate [low, high]`` of a success row (see sim_graph.success_row)."""
    low, high = row['wilson95']
    return f'{row["successes"]}/{row["episodes"]} = {row["rate"]:.0%} [{low:.2f}, {high:.2f}]'


def verdict(base: dict, improved: dict) -> str:
    """Compare two success rates by their 95% Wilson intervals (overlap: not significant)."""
    if improved['wilson95'][0] > base['wilson95'][1]:
        return 'better (intervals apart)'
    if improved['wilson95'][1] < base['wilson95'][0]:
        return 'worse (intervals apart)'
    return 'no significant change'


HTML_STYLE = ('body{font-family:sans-serif;max-width:1100px;margin:2em auto}'
              'table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;'
              'padding:4px 8px;font-size:14px}th{background:#eee}')
