// Sort a table on a header click: numbers as numbers, text as text, empty cells last.
function compareCells(a, b) {
  if (a === "" || b === "") return (a === "") - (b === "");
  const x = Number(a), y = Number(b);
  return Number.isNaN(x) || Number.isNaN(y) ? a.localeCompare(b) : x - y;
}
function sortTable(table, header, column) {
  const ascending = header.getAttribute("aria-sort") !== "ascending";
  table.querySelectorAll("th").forEach((th) => th.removeAttribute("aria-sort"));
  header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const body = table.tBodies[0];
  const key = (row) => row.cells[column].dataset.sort;
  const rows = Array.from(body.rows).sort((r, s) => {
    const a = key(r), b = key(s);
    if (a === "" || b === "") return compareCells(a, b);
    return ascending ? compareCells(a, b) : compareCells(b, a);
  });
  body.append(...rows);
}
document.querySelectorAll("table.sortable").forEach((table) => {
  table.querySelectorAll("th").forEach((header, column) => {
    header.addEventListener("click", () => sortTable(table, header, column));
  });
});
