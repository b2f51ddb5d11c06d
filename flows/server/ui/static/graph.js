// The graph page: draw its diagram.
import { renderAll } from "./diagram.js";

renderAll();
