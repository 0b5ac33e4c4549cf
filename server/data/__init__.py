"""Server-side datasets: registry (folders, arrays, built-in), decoded-image cache, epoch plans."""
