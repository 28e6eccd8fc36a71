// Client-side filter of the album grid: by free text (title, artist, concept, genre,
// mood), by genre and by mood. No server, no network: works from file:// too.
// Reads only data-* attributes written (escaped) by the builder; never writes HTML.
(function () {
  "use strict";
  var form = document.getElementById("filters");
  if (!form) { return; }
  var q = document.getElementById("q");
  var genre = document.getElementById("genre");
  var mood = document.getElementById("mood");
  var shown = document.getElementById("shown");
  var noMatch = document.getElementById("no-match");
  var cards = Array.prototype.slice.call(document.querySelectorAll(".album-card"));

  function genresOf(card) {
    try {
      var list = JSON.parse(card.getAttribute("data-genres") || "[]");
      return Array.isArray(list) ? list : [];
    } catch (e) {
      return [];
    }
  }

  function apply() {
    var words = q.value.toLowerCase().split(/\s+/).filter(Boolean);
    var g = genre.value;
    var m = mood.value;
    var n = 0;
    cards.forEach(function (card) {
      var text = card.getAttribute("data-search") || "";
      var ok = words.every(function (w) { return text.indexOf(w) !== -1; }) &&
        (!g || genresOf(card).indexOf(g) !== -1) &&
        (!m || card.getAttribute("data-mood") === m);
      card.hidden = !ok;
      if (ok) { n += 1; }
    });
    shown.textContent = String(n);
    noMatch.hidden = n !== 0 || cards.length === 0;
  }

  form.addEventListener("submit", function (e) { e.preventDefault(); });
  q.addEventListener("input", apply);
  genre.addEventListener("change", apply);
  mood.addEventListener("change", apply);
  apply();
})();
